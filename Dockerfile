FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY admin ./admin
COPY workers ./workers
COPY ussd_menus ./ussd_menus
COPY migrations ./migrations
COPY wsgi.py ./
RUN pip install --no-cache-dir . && useradd --system sacco
USER sacco
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4", "wsgi:app"]
