"""Measuring steering: concepts, statistics with intervals, re-scoring, one measurement
batch, reports, sweeps, steerability scores and the selection engine with its presets
(the screen, the concept search). Works for any model; never imports the offline world."""
from sae_steer.measure.batch import Arm, ArmResult, Batch, measure_batch
from sae_steer.measure.candidates import ConceptCandidates, concept_candidates, logit_effect
from sae_steer.measure.choose import ConceptChoice, ConceptResult, steer_concept
from sae_steer.measure.concepts import Concept, ConceptLike, occurrences
from sae_steer.measure.report import Control, SteeringReport, steering_report, steering_reports
from sae_steer.measure.sides import Comparison, SideStats, compare
from sae_steer.measure.rescore import Measured, Rescored, measure, rescore
from sae_steer.measure.stats import (Estimate, Ratio, normal_mean, paired_difference,
                                     poisson_ratio, pooled_rate, repeated_ngram_fraction, wilson)
from sae_steer.measure.screen import screen_features
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.select import select_features
from sae_steer.measure.steerability import FeatureScores, feature_scores
from sae_steer.measure.sweep import Sweep, scale_sweep, scale_sweeps, suggest_scale
from sae_steer.measure.target import Target

__all__ = ["Arm", "ArmResult", "Batch", "Comparison", "Concept", "ConceptCandidates",
           "ConceptChoice", "ConceptLike", "ConceptResult", "Control", "Estimate",
           "FeatureScores", "Measured", "Ratio", "Rescored", "SideStats", "SteerabilityScreen",
           "SteeringReport", "Sweep", "Target", "compare", "concept_candidates",
           "feature_scores", "logit_effect", "measure", "measure_batch", "normal_mean",
           "occurrences", "paired_difference", "poisson_ratio", "pooled_rate",
           "repeated_ngram_fraction", "rescore", "scale_sweep", "scale_sweeps",
           "screen_features", "select_features", "steer_concept", "steering_report",
           "steering_reports", "suggest_scale", "wilson"]
