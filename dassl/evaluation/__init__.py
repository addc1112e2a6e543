from .build import build_evaluator
from .evaluator import EVALUATOR_REGISTRY, Classification, EvaluatorBase, set_metric_function

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "EvaluatorBase", "Classification", "set_metric_function"]
