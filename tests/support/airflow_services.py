"""Real Airflow components for tests and benchmarks: a re-export of :mod:`sandbox.airflow_services`.

The harness moved into the product (``make up`` starts the same components through it); the
names tests and benchmarks import from here stay (see that module's docstring for the API)::

    from tests.support.airflow_services import AirflowServices, Component, airflow_argv, LOCAL_COMPONENTS
"""

from sandbox.airflow_services import (
    API_SERVER,
    BAD_TI_STATES,
    DAG_PROCESSOR,
    LEAN_SETTINGS,
    LOCAL_COMPONENTS,
    ROOT,
    SCHEDULER,
    TERMINAL_RUN_STATES,
    TRIGGERER,
    AirflowApi,
    AirflowServices,
    Component,
    ServicesError,
    airflow_argv,
    process_running,
    tail,
)

__all__ = [
    "API_SERVER", "BAD_TI_STATES", "DAG_PROCESSOR", "LEAN_SETTINGS", "LOCAL_COMPONENTS", "ROOT", "SCHEDULER",
    "TERMINAL_RUN_STATES", "TRIGGERER", "AirflowApi", "AirflowServices", "Component", "ServicesError",
    "airflow_argv", "process_running", "tail",
]
