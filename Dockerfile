# One image for web, worker and beat (docker-compose.yml picks the command).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libmagic1 make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV DJANGO_SETTINGS_MODULE=mediasite.settings.production MEDIASITE_DATA_DIR=/data MEDIASITE_BIND_HOST=0.0.0.0
RUN python manage.py collectstatic --noinput -v 0
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec gunicorn -c mediasite/gunicorn_conf.py mediasite.wsgi:application"]
