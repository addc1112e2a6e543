"""The experiments library: everything the command-line tools of tools/ do, in modules that say what they hold.

Above train.py and the run infrastructure (identity, records, run folders), below tools/:

- protocols and plans: ``methods`` (the method table, from the trainer registry), ``protocols`` (datasets, the
  paper's order, transfer targets, the sweep's own settings per dataset), ``settings`` (a sweep's environment),
  ``planner`` (the runs of a protocol as a flat list of ``Unit`` specs: a training run with its evaluations),
  ``sweep`` (plan a sweep command, run its units);
- run status and records: ``records`` (the one ``results.json`` reader and run-folder scanner), ``run_status``
  (is a record the run a command would make now?);
- running: ``children`` (every process started), ``progress`` (epoch and ETA on the console), ``run_policy``
  (threads per run), ``commands`` (a launcher's command list and dependencies), ``launch_local``,
  ``launch_slurm``, ``logs`` (log tails, durations);
- lockstep: ``lockstep_groups`` (which runs of a sweep or command list train in one process),
  ``lockstep_bench`` (their wall time against separate runs);
- benchmarks: ``benchmark`` (the step, memory, cache and real-shape benchmarks, the GPU device check);
- tables: ``table_records``, ``aggregate``, ``reference`` (the paper's numbers), ``tables``.
"""
