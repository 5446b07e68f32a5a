"""execute: where tasks run. The executor door (local or SLURM), the SLURM CLIs (slurm.py is
the only caller of sbatch/squeue/sacct/scancel/scontrol), local task processes, the launcher
that every task script runs, a task's one-process lock (tasklock), task records and the
status joined from them, and healing tasks that died. Imports define/ and track/; a task's
training is a child process, not an import."""
