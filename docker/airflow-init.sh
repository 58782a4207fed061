#!/usr/bin/env bash
# One-shot start-up of the deployment (service airflow-init); every Airflow service waits for it.
# 1. check .env (fails naming the variable), 2. migrate the metadata database and the order
# ledger (connection order_ledger: the workers never create or alter its tables), 3. create the
# pools the DAGs use (from the store config), 4. set the UI password of 'admin' from
# AIRFLOW_ADMIN_PASSWORD.
set -euo pipefail
CHECK_ENV_FILES=1 python /opt/order-integration/docker/check_env.py
airflow db migrate
python -m order_integration ledger migrate
python -m order_integration pools > /tmp/order_integration_pools.json
airflow pools import /tmp/order_integration_pools.json
python - <<'PY'
import json, os
path = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
with open(path, "w", encoding="utf-8") as fh:
    json.dump({"admin": os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
os.chmod(path, 0o660)
PY
echo "airflow-init: environment checked, databases migrated (Airflow, ledger), pools created, admin password set"
