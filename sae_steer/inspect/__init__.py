"""Inspection: the streaming feature search, its results, feature cards, concept matching."""
from sae_steer.inspect.card import (FeatureCard, feature_card, interesting_features,
                                    logit_effects, unembed_direction)
from sae_steer.inspect.groundtruth import (ConceptMatch, acts_and_labels, auroc, concept_matches,
                                           match_concepts, match_rows)
from sae_steer.inspect.results import Excerpt, FeatureSearch
from sae_steer.inspect.search import load_or_search, search_features, search_token_batches
from sae_steer.inspect.state import SearchState

__all__ = ["ConceptMatch", "Excerpt", "FeatureCard", "FeatureSearch", "SearchState",
           "acts_and_labels", "auroc", "concept_matches", "feature_card", "interesting_features",
           "load_or_search", "logit_effects", "match_concepts", "match_rows", "search_features",
           "search_token_batches", "unembed_direction"]
