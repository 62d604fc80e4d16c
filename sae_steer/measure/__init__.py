"""Measuring steering: concepts, statistics with intervals, re-scoring, reports, sweeps and
the choice of feature and scale. Works for any model; never imports the offline world."""
from sae_steer.measure.candidates import ConceptCandidates, concept_candidates, logit_effect
from sae_steer.measure.choose import ConceptChoice, ConceptResult, choose_feature, steer_concept
from sae_steer.measure.concepts import Concept, ConceptLike, occurrences
from sae_steer.measure.report import SideStats, SteeringReport, steering_report
from sae_steer.measure.rescore import Measured, Rescored, measure, rescore
from sae_steer.measure.stats import Estimate, normal_mean, pooled_rate, wilson
from sae_steer.measure.sweep import Sweep, scale_sweep, suggest_scale

__all__ = ["Concept", "ConceptCandidates", "ConceptChoice", "ConceptLike", "ConceptResult",
           "Estimate", "Measured", "Rescored", "SideStats", "SteeringReport", "Sweep",
           "choose_feature", "concept_candidates", "logit_effect", "measure", "normal_mean",
           "occurrences", "pooled_rate", "rescore", "scale_sweep", "steer_concept",
           "steering_report", "suggest_scale", "wilson"]
