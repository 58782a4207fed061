# The Airflow image of this deployment: the official image of the pinned version, plus the
# locked requirements and this package (editable install, as `make install` does).
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.11
FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION

# The lock pins apache-airflow==${AIRFLOW_VERSION} itself, so nothing of Airflow moves.
COPY --chown=airflow:0 requirements.txt /opt/order-integration/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/order-integration/requirements.txt

COPY --chown=airflow:0 pyproject.toml README.md /opt/order-integration/
COPY --chown=airflow:0 include /opt/order-integration/include
COPY --chown=airflow:0 sandbox /opt/order-integration/sandbox
COPY --chown=airflow:0 docker/check_env.py docker/airflow-init.sh /opt/order-integration/docker/
RUN pip install --no-cache-dir --no-deps -e /opt/order-integration
COPY --chown=airflow:0 dags /opt/airflow/dags
# owned by group 0 and group-writable: the containers run as ${AIRFLOW_UID}:0 (see compose)
USER root
RUN mkdir -p /opt/airflow/auth /opt/airflow/config /opt/airflow/secrets \
 && chown airflow:0 /opt/airflow/auth /opt/airflow/config /opt/airflow/secrets \
 && chmod 0775 /opt/airflow/auth
USER airflow
