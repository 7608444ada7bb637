"""Set up downstream credentials on a test OpenBao the way an operator would (SPEC 6):
KV v2 secrets for the example ``vault-kv`` scopes and the database secrets engine on a
real PostgreSQL for the example ``database`` scope (``scopes/data.yaml``)."""

from __future__ import annotations

from typing import Any

import hvac
import psycopg

from tests.servers.postgres import ADMIN_PASSWORD, ADMIN_USER, PostgresServer
from tests.servers.processes import BaoServer

DB_MOUNT = "database"
DB_ROLE = "analytics-readonly"  # scopes/data.yaml: warehouse-readonly
SECRETS = {
    "data-agent/weather-api": {"api_key": "weather-secret-value"},  # weather-api-key
    "data-agent/other-api": {"api_key": "sibling-secret-value"},  # granted to no one
    "deploy/staging/app": {"replicas": "3"},  # deploy-config-read (a subtree)
}
CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON sales TO "{{name}}";',
]


def client(bao: BaoServer, token: str | None = None) -> Any:
    return hvac.Client(url=bao.addr, token=token or bao.root_token, timeout=10)


def setup_kv(bao: BaoServer) -> None:
    """The dev server mounts KV v2 at ``secret/``: write the example secrets."""
    admin = client(bao)
    for path, data in SECRETS.items():
        admin.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def setup_database(bao: BaoServer, pg: PostgresServer, *, max_ttl: str = "24h") -> None:
    """A ``sales`` table, the database engine connected as the cluster's superuser, and a
    role whose leases live an hour by default (longer than any capability)."""
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS sales (amount int)")
        conn.execute("INSERT INTO sales VALUES (42)")
    admin = client(bao)
    if f"{DB_MOUNT}/" not in admin.sys.list_mounted_secrets_engines()["data"]:
        admin.sys.enable_secrets_engine("database", path=DB_MOUNT)
    admin.write_data(
        f"{DB_MOUNT}/config/warehouse",
        data={
            "plugin_name": "postgresql-database-plugin",
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}/postgres",
            "username": ADMIN_USER,
            "password": ADMIN_PASSWORD,
            "allowed_roles": [DB_ROLE],
            "verify_connection": True,
        },
    )
    write_db_role(bao, CREATION, max_ttl=max_ttl)


def write_db_role(bao: BaoServer, creation: list[str], *, max_ttl: str = "24h", default_ttl: str = "1h") -> None:
    client(bao).write_data(
        f"{DB_MOUNT}/roles/{DB_ROLE}",
        data={"db_name": "warehouse", "creation_statements": creation, "default_ttl": default_ttl, "max_ttl": max_ttl},
    )


def leases(bao: BaoServer) -> list[str]:
    """The live leases of the database role (``sys/leases/lookup``, root)."""
    try:
        answer = client(bao).list(f"sys/leases/lookup/{DB_MOUNT}/creds/{DB_ROLE}/")
    except hvac.exceptions.InvalidPath:
        return []
    return [] if answer is None else list(answer["data"]["keys"])
