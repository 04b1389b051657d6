#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infraaudit.settings")
    if sys.argv[1:2] == ["makemigrations"]:
        # Writing or checking migrations reads the models only: it needs neither the
        # secret key nor the encryption key that production settings insist on.
        os.environ.setdefault("DJANGO_DEBUG", "1")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
