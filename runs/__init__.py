"""Run infrastructure, above the methods: a run's identity (``identity``), its record (``record``: results.json,
predictions.npz), its folder discipline (``run_folder``) eval-only settings (``eval_only``)
and runs that differ only in their loss trained in one process (``lockstep``). ``trainers/`` never
imports this package; the engine reaches the record writer and the metric function through the hooks
:func:`register_with_engine` fills in (train.py calls it)."""


def register_with_engine() -> None:
    """Give the engine this application's run-record writer and metric function (the engine imports neither)."""
    from calibration.metrics import compute_metrics
    from dassl.engine import set_record_writer
    from dassl.evaluation import set_metric_function

    from .record import write_run_record

    set_record_writer(write_run_record)
    set_metric_function(compute_metrics)
