FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY infraaudit ./infraaudit
COPY accounts ./accounts
COPY providers ./providers
COPY costs ./costs
COPY templates ./templates
COPY manage.py ./
# The compose volumes mount on /app/var/uploads and /data/imports: they must exist and
# belong to app in the image, or Docker creates them root-owned and uploads fail.
RUN pip install . && useradd --system --home /app app \
    && mkdir -p /app/var/uploads /data/imports && chown -R app /app/var /data/imports \
    && DJANGO_DEBUG=1 python manage.py collectstatic --noinput

USER app
EXPOSE 8000
CMD ["gunicorn", "infraaudit.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", \
     "--worker-class", "gthread", "--threads", "8", "--timeout", "120"]
