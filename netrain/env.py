"""Every environment variable netrain reads or sets, by name, with what it means. Other
modules use these constants, never the literal names, but for the scripts' shell text and
the node probe (tests/unit/test_env_names.py keeps it, and lists those two).

User-facing (also in the README, "Environment variables"): CONFIG, TRAININGS_DIR,
TRACKING_URI, SHIP_AFTER, SHIP_LATER, SHIP_BACKOFF, SHIP_BACKOFF_MAX, SHIP_HTTP_TIMEOUT,
SHIP_CHUNK_EVENTS, DRAIN_TIMEOUT, BATCH_DIR, WATCH_FIRST, CHECK_HTTP_TIMEOUT, EXIT_GRACE,
DEBUG, SHIP_JOURNALS, SHIP_LANES. The others pass facts between netrain's own processes (a
script, the launcher, a task, its shipper) and are described here only.
"""

# --- user-facing -------------------------------------------------------------------------
#: netrain.yaml to use (the --config option's variable)
CONFIG = "NETRAIN_CONFIG"
#: overrides trainings_dir of netrain.yaml
TRAININGS_DIR = "NETRAIN_TRAININGS_DIR"
#: overrides tracking_uri of netrain.yaml
TRACKING_URI = "NETRAIN_TRACKING_URI"
#: seconds a task trains before it starts shipping its journal itself (default 30), when
#: SHIP_LATER is set
SHIP_AFTER = "NETRAIN_SHIP_AFTER"
#: "1": the executor ships this task's journal after it ends (a local run, or a SLURM array
#: with a sync job), unless the task outlives SHIP_AFTER; "always": the task never ships
#: (a SQLite store on SLURM: the sync job is its one writer). Set by netrain.track.plan
SHIP_LATER = "NETRAIN_SHIP_LATER"
#: first retry delay in seconds while tracking is unreachable (default 0.5)
SHIP_BACKOFF = "NETRAIN_SHIP_BACKOFF"
#: longest retry delay in seconds (default 10)
SHIP_BACKOFF_MAX = "NETRAIN_SHIP_BACKOFF_MAX"
#: seconds one MLflow request may take (MLFLOW_HTTP_REQUEST_TIMEOUT; default 60)
SHIP_HTTP_TIMEOUT = "NETRAIN_SHIP_HTTP_TIMEOUT"
#: journal events read and shipped in one round (default 2000)
SHIP_CHUNK_EVENTS = "NETRAIN_SHIP_CHUNK_EVENTS"
#: journals `netrain sync` (and `netrain run`'s courier) ships at once to a tracking
#: server (default 8; a SQLite file takes one at a time)
SHIP_JOURNALS = "NETRAIN_SHIP_JOURNALS"
#: runs of one journal shipped at once to a tracking server (default 4; a SQLite file or
#: database URI takes one at a time)
SHIP_LANES = "NETRAIN_SHIP_LANES"
#: seconds a shipper keeps trying after its task ended (default 60); then `netrain sync`
DRAIN_TIMEOUT = "NETRAIN_DRAIN_TIMEOUT"
#: the batch directory; set by the task scripts, and needed to run a batch's
#: netrain_main.py by hand inside it
BATCH_DIR = "NETRAIN_BATCH_DIR"
#: seconds `submit` follows the first tasks of a batch for a common failure (default: 30 on
#: a terminal, else 0)
WATCH_FIRST = "NETRAIN_WATCH_FIRST"
#: seconds `netrain check`'s probe waits for the tracking server (default 10); the probe
#: runs on the node without netrain's modules, so it spells the name itself
CHECK_HTTP_TIMEOUT = "NETRAIN_CHECK_HTTP_TIMEOUT"

#: seconds a process that ends on an error waits for its other threads (default 5)
EXIT_GRACE = "NETRAIN_EXIT_GRACE"
#: "1": a task, launcher or shipper that ends on an unexpected error prints its traceback
#: too (netrain.exits.run_main; the CLI has --debug)
DEBUG = "NETRAIN_DEBUG"

# --- between netrain's own processes -----------------------------------------------------
#: the batch index is SLURM_ARRAY_TASK_ID + this (arrays split under MaxArraySize)
INDEX_OFFSET = "NETRAIN_INDEX_OFFSET"
#: "local" when the local executor started the task (else SLURM's variables say it)
EXECUTOR = "NETRAIN_EXECUTOR"
#: the task's log file, attached to its run
LOG = "NETRAIN_LOG"
#: "1"/"0": whether the script requeues a task stopped by SLURM's time-limit signal
REQUEUE = "NETRAIN_REQUEUE"
#: "1": train the task again from scratch, in new runs (`netrain run --rerun`)
RERUN = "NETRAIN_RERUN"
#: the key of a retrain's journal and records, chosen by the process that starts it
RETRAIN_KEY = "NETRAIN_RETRAIN_KEY"
#: the journal the launcher opened for the task
JOURNAL = "NETRAIN_JOURNAL"
#: who ships the task's journal: "launcher" (the launcher beside it), "off"; else the task
#: (netrain.track.plan.for_task reads it)
SHIPPER = "NETRAIN_SHIPPER"
#: JSON of the tags the launcher gives the task run (as `mlflow run` would)
RUN_TAGS = "NETRAIN_RUN_TAGS"

USER_FACING = (CONFIG, TRAININGS_DIR, TRACKING_URI, SHIP_AFTER, SHIP_LATER, SHIP_BACKOFF,
               SHIP_BACKOFF_MAX, SHIP_HTTP_TIMEOUT, SHIP_CHUNK_EVENTS, DRAIN_TIMEOUT, BATCH_DIR,
               WATCH_FIRST, CHECK_HTTP_TIMEOUT, EXIT_GRACE, DEBUG, SHIP_JOURNALS,
               SHIP_LANES)
