"""Measuring steering: concepts, statistics with intervals, re-scoring, reports, sweeps,
steerability scores and the choice of feature and scale. Works for any model; never
imports the offline world."""
from sae_steer.measure.candidates import ConceptCandidates, concept_candidates, logit_effect
from sae_steer.measure.choose import (ConceptChoice, ConceptResult, FeatureResult, choose_feature,
                                     steer_concept, steer_feature)
from sae_steer.measure.concepts import Concept, ConceptLike, occurrences
from sae_steer.measure.report import Control, SteeringReport, steering_report, steering_reports
from sae_steer.measure.sides import Comparison, SideStats, compare
from sae_steer.measure.rescore import Measured, Rescored, measure, rescore
from sae_steer.measure.stats import (Estimate, Ratio, normal_mean, paired_difference,
                                     poisson_ratio, pooled_rate, repeated_ngram_fraction, wilson)
from sae_steer.measure.screen import screen_features
from sae_steer.measure.screen_results import SteerabilityScreen
from sae_steer.measure.steerability import FeatureScores, feature_scores
from sae_steer.measure.sweep import Sweep, scale_sweep, suggest_scale

__all__ = ["Comparison", "Concept", "ConceptCandidates", "ConceptChoice", "ConceptLike",
           "ConceptResult", "Control", "Estimate", "FeatureResult", "FeatureScores", "Measured", "Ratio",
           "Rescored", "SideStats", "SteerabilityScreen", "SteeringReport", "Sweep", "choose_feature", "compare",
           "concept_candidates", "feature_scores", "logit_effect", "measure", "normal_mean",
           "occurrences", "paired_difference", "poisson_ratio", "pooled_rate",
           "repeated_ngram_fraction", "rescore", "scale_sweep", "screen_features", "steer_concept",
           "steer_feature", "steering_report", "steering_reports", "suggest_scale", "wilson"]
