"""monai_iqad.metrics: IQA correlations (PLCC/SROCC/KRCC), quality-aware diagnosis metrics (AUC/ACC/F1) and classic
no-reference IQA metrics (NIQE, BRISQUE, PIQE, variance of the Laplacian, blur effect; registry ``NR_IQA_METRICS``).

Plain functions work on score arrays; the Ignite metrics wrap them for MONAI engines. See ``docs/metrics.md``.
"""

from __future__ import annotations

from monai_iqad.metrics._utils import Logistic4FitWarning, UndefinedMetricWarning
from monai_iqad.metrics.correlation import fit_logistic4, iqa_summary, krcc, logistic4, plcc, rmse, srocc
from monai_iqad.metrics.diagnosis import (
    DiagnosisAUC,
    DiagnosisMetrics,
    accuracy,
    auc_official,
    confusion,
    diagnosis_metric_keys,
    diagnosis_metrics,
    f1,
    roc_auc,
)
from monai_iqad.metrics.iqa import IQA_SUMMARY_KEYS, KRCC, PLCC, SROCC, IQACorrelations
from monai_iqad.metrics.nr_iqa import NR_IQA_METRICS, NRIQAMetric, blur_effect, brisque, laplacian_variance, niqe, piqe

__all__ = [
    "plcc",
    "srocc",
    "krcc",
    "rmse",
    "logistic4",
    "fit_logistic4",
    "iqa_summary",
    "IQA_SUMMARY_KEYS",
    "SROCC",
    "KRCC",
    "PLCC",
    "IQACorrelations",
    "roc_auc",
    "auc_official",
    "accuracy",
    "f1",
    "confusion",
    "diagnosis_metrics",
    "diagnosis_metric_keys",
    "DiagnosisMetrics",
    "DiagnosisAUC",
    "UndefinedMetricWarning",
    "Logistic4FitWarning",
    "niqe",
    "brisque",
    "piqe",
    "laplacian_variance",
    "blur_effect",
    "NR_IQA_METRICS",
    "NRIQAMetric",
]
