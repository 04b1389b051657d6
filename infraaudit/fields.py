"""Serializer fields shared by the apps."""

from rest_framework import serializers


class _TextOnly:
    """A string field that takes JSON strings only. DRF's CharField turns 5 or true into
    "5" or "True": a dismissal reason recorded that way is a client's bug kept forever,
    and ``{"uri": 5}`` in a FOCUS config became the folder ``.../5``."""

    default_error_messages = {"not_text": "must be a string"}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_text")
        return super().to_internal_value(data)


class TextField(_TextOnly, serializers.CharField):
    pass


class PatternField(_TextOnly, serializers.RegexField):
    pass
