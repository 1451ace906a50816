"""kequn on Apache Spark: a session, its Ibis backend, copying tables into it, JSON paths.

Segment rules compile to one Ibis expression whatever the engine (kequn/segments/compile.py);
this module holds what Spark needs besides that: a ``SparkSession`` configured for kequn
(session time zone UTC, so the naive workspace-local timestamps keep their wall-clock
values), :func:`copy_tables` to put a workspace's tables into Spark, and :func:`json_path`,
the one compiler construct Ibis's PySpark backend gets wrong (its ``get_json_object``
returns JSON strings without their quotes, so ``properties.category = '美妆'`` could not be
unwrapped). docs/scale.md shows how to point a workspace at a cluster.

``pyspark`` is an optional dependency (``pip install 'kequn[spark]'``) and needs Java 17 or
later; both are checked with a message that says what to install.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from kequn.errors import WorkspaceError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from kequn.workspace import Workspace

__all__ = [
    "DEFAULT_MASTER",
    "RULE_TABLES",
    "connect_spark",
    "copy_tables",
    "java_version",
    "json_path",
    "spark_session",
]

DEFAULT_MASTER = "local[2]"
# Settings for a session with a local[…] master; keys given in the config override them.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}
# the workspace tables segment rules read, in the order they are copied
RULE_TABLES = (
    "customers",
    "orders",
    "events",
    "rfm_scores",
    "clv_scores",
    "churn_scores",
    "lifecycle_stages",
)


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise WorkspaceError(
            "the Spark store needs pyspark; install it with `pip install 'kequn[spark]'`"
        ) from exc


def java_version() -> str:
    """The ``java -version`` banner, or a WorkspaceError saying how to get Java 17."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        where = f"JAVA_HOME {home!r} has no bin/java" if home else "no `java` on PATH"
        raise WorkspaceError(
            f"Spark needs Java 17 or later and none was found ({where}); install one, "
            "e.g. `apt-get install openjdk-17-jre-headless`"
        )
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    banner = (done.stderr or done.stdout).strip()
    if done.returncode != 0:
        raise WorkspaceError(f"{java!r} -version failed: {banner!r}")
    first = banner.splitlines()[0] if banner else java
    found = re.search(r'version "(\d+)(?:\.(\d+))?', first)
    if found:  # "1.8.0_392" is Java 8, "17.0.15" Java 17
        major = int(found[2]) if found[1] == "1" and found[2] else int(found[1])
        if major < 17:
            raise WorkspaceError(
                f"Spark needs Java 17 or later; {java!r} is {first!r} "
                "(set JAVA_HOME to a newer one)"
            )
    return first


def spark_session(
    master: str = DEFAULT_MASTER,
    conf: Mapping[str, object] | None = None,
    *,
    app_name: str = "kequn",
    log_level: str = "ERROR",
) -> SparkSession:
    """A SparkSession for kequn (an existing one in this process is reused).

    ``master`` is any Spark master URL (``local[2]``, ``spark://host:7077``, ``yarn``,
    ``k8s://…``); ``conf`` holds further ``spark.*`` settings. Python workers run this
    interpreter unless ``PYSPARK_PYTHON`` says otherwise: Ibis unwraps JSON values with
    pandas UDFs, so executors need pandas and pyarrow.
    """
    _require_pyspark()
    java_version()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings: dict[str, str] = dict(LOCAL_DEFAULTS) if master.startswith("local") else {}
    settings.update({str(k): str(v) for k, v in (conf or {}).items()})
    settings["spark.sql.session.timeZone"] = "UTC"  # naive timestamps keep their wall clock
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(log_level)
    return session


def connect_spark(
    session: SparkSession | None = None,
    *,
    master: str = DEFAULT_MASTER,
    conf: Mapping[str, object] | None = None,
) -> ibis.BaseBackend:
    """The Ibis backend over ``session`` (or over a new one from ``master`` and ``conf``)."""
    if session is None:
        session = spark_session(master, conf)
    return ibis.pyspark.connect(session)


def store_backend(base: Path) -> ibis.BaseBackend:
    """The backend for ``[store] backend = "spark"``: settings from ``[store.spark]``.

    ``master`` (default ``local[2]``) and any ``spark.*`` keys are read from the workspace's
    kequn.toml; a local session keeps its managed tables in ``spark-warehouse`` beside the
    config unless ``spark.sql.warehouse.dir`` is set.
    """
    from kequn.config import CONFIG_NAME, Config

    raw = Config.load(base / CONFIG_NAME).raw.get("store", {})
    section = raw.get("spark", {}) if isinstance(raw, dict) else {}
    if not isinstance(section, dict):
        raise WorkspaceError(f"[store.spark] must be a table, not {section!r}")
    master = str(section.get("master", DEFAULT_MASTER))
    conf = {k: v for k, v in section.items() if k != "master" and not isinstance(v, dict)}
    if master.startswith("local"):
        conf.setdefault("spark.sql.warehouse.dir", str((base / "spark-warehouse").resolve()))
    con = connect_spark(master=master, conf=conf)
    _empty_views(con)
    return con


def _empty_views(con: ibis.BaseBackend) -> None:
    """An empty temporary view for each canonical table the catalog lacks.

    The store creates missing tables when it opens; as managed tables that would write a
    folder per table into the warehouse (seconds each, and a second session would find the
    folders without their catalog entries). Views cost nothing and :func:`copy_tables`
    replaces them; tables the cluster's catalog has are used as they are.
    """
    from ibis.backends.pyspark.datatypes import PySparkSchema

    from kequn.store import TABLES

    session = con._session
    existing = set(con.list_tables())
    for name, schema in TABLES.items():
        if name not in existing:
            empty = session.createDataFrame([], schema=PySparkSchema.from_ibis(schema))
            empty.createOrReplaceTempView(name)


def copy_tables(
    source: Workspace | ibis.BaseBackend,
    target: Workspace | ibis.BaseBackend,
    tables: Iterable[str] = RULE_TABLES,
    *,
    temporary: bool = True,
) -> dict[str, int]:
    """Copy canonical tables from a workspace (or any Ibis backend) into Spark.

    Each table travels as Arrow through the driver, with its canonical schema, so it suits
    test and sample sizes; at scale, write Parquet and register it in the cluster's catalog
    instead (docs/scale.md). ``temporary`` makes session-scoped temporary views (nothing is
    written to disk); otherwise managed tables are overwritten. Tables missing from the source
    are skipped. Returns the rows copied per table.
    """
    from ibis.backends.pyspark.datatypes import PySparkSchema

    from kequn.store import TABLES

    con = getattr(source, "con", source)
    spark = getattr(target, "con", target)
    if getattr(spark, "name", None) != "pyspark":
        raise WorkspaceError(f"copy_tables copies into Spark; the target is {spark!r}")
    session = spark._session  # the Ibis PySpark backend's session
    existing = set(con.list_tables())
    copied: dict[str, int] = {}
    for name in tables:
        if name not in existing:
            continue
        schema = TABLES[name]
        data = con.table(name).select(*schema.names).to_pyarrow().cast(schema.to_pyarrow())
        frame = session.createDataFrame(data, schema=PySparkSchema.from_ibis(schema))
        if temporary:
            frame.createOrReplaceTempView(name)
        else:  # an empty view of the same name (see _empty_views) would hide the table
            session.catalog.dropTempView(name)
            frame.write.mode("overwrite").saveAsTable(name)
        copied[name] = data.num_rows
    return copied


# --- JSON paths -----------------------------------------------------------------------------
# Spark's variant functions (Spark 4.0+) give back JSON text with every type kept, which Ibis's
# unwrapping (``.str``, ``unwrap_as``) reads exactly as DuckDB's ``->`` result.


# try_parse_json, since sqlglot drops a call named parse_json when it writes Spark SQL. The
# two differ only on invalid JSON text (NULL here, an error on DuckDB), which kequn's import
# never stores: it quarantines such rows.
@ibis.udf.scalar.builtin(name="try_parse_json")
def _parse_json(text: str) -> dt.Binary:  # Spark's VARIANT; only passed on
    ...


@ibis.udf.scalar.builtin(name="variant_get")
def _variant_get(value: dt.Binary, path: str) -> dt.Binary: ...


@ibis.udf.scalar.builtin(name="to_json")
def _to_json(value: dt.Binary) -> dt.JSON: ...


def json_path(text: ir.StringValue, keys: Iterable[str]) -> ir.JSONValue:
    """The JSON value at ``keys`` inside the JSON text ``text``, as JSON (NULL when absent).

    Same meaning as ``text.cast("json")[k1][k2]…`` on DuckDB: a JSON ``null`` stays the
    JSON text ``null``, a missing key or a non-object on the way gives SQL NULL.
    """
    path = "$" + "".join(f"[{_quote_key(k)}]" for k in keys)
    return _to_json(_variant_get(_parse_json(text), ibis.literal(path)))


def _quote_key(key: str) -> str:
    if '"' in key or "\\" in key:
        raise WorkspaceError(f"JSON key {key!r} cannot be read on Spark (it has a quote)")
    return f'"{key}"'
