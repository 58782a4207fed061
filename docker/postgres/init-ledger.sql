-- The order ledger lives next to Airflow's metadata database, in a database of its own
-- (connection order_ledger); the official postgres image runs this on first start only.
CREATE DATABASE order_ledger;
