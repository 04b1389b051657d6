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
RUN pip install . && useradd --system --home /app app && mkdir -p /app/var && chown app /app/var \
    && DJANGO_DEBUG=1 python manage.py collectstatic --noinput

USER app
EXPOSE 8000
CMD ["gunicorn", "infraaudit.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
