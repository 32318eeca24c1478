FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
# Dependencies first, from the lock (exact versions and hashes), so a code change reuses
# this layer; then the project itself with nothing more resolved.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md wsgi.py gunicorn.conf.py ./
COPY app ./app
COPY admin ./admin
COPY workers ./workers
COPY ussd_menus ./ussd_menus
COPY migrations ./migrations
# The loan book template that `sacco import loan-book` points staff to.
COPY templates ./templates
# Editable, so `sacco` (a console script) runs this code, beside migrations/ and templates/.
# instance/ (documents, metrics files) belongs to the user the server runs as: a volume
# mounted there starts as a copy of it, owner included, so the server can write to it.
RUN pip install --no-cache-dir --no-deps --no-build-isolation -e . \
    && useradd --system sacco \
    && mkdir -p /srv/instance/prometheus \
    && chown -R sacco:sacco /srv/instance \
    && chmod 0700 /srv/instance
ENV INSTANCE_PATH=/srv/instance
USER sacco
EXPOSE 8000
CMD ["gunicorn", "--bind", "0.0.0.0:8000", "wsgi:app"]
