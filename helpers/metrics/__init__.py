"""Disentanglement metrics: OMES (Dapueto et al., NeurIPS 2024) and disentanglement_lib's peers.

``omes`` scores a representation from intervention pairs (:mod:`helpers.metrics.omes`);
:mod:`helpers.metrics.peers` holds BetaVAE, FactorVAE, MIG, DCI, SAP and Modularity with
disentanglement_lib's definitions and default settings (Locatello et al., ICML 2019).
"""

from helpers.metrics.omes import (
    OMESResult,
    active_dimensions,
    association_map,
    association_matrix,
    omes,
    omes_alpha_sweep,
    omes_noise_floor,
    sample_omes_pairs,
)
from helpers.metrics.peers import (
    beta_vae_score,
    dci,
    dci_completeness,
    dci_disentanglement,
    dci_score,
    discrete_entropy,
    factor_vae_score,
    histogram_discretize,
    mig,
    mig_score,
    modularity,
    modularity_from_mutual_information,
    modularity_score,
    mutual_information_matrix,
    sample_codes,
    sap,
    sap_score,
)

__all__ = [
    "OMESResult",
    "active_dimensions",
    "association_map",
    "association_matrix",
    "beta_vae_score",
    "dci",
    "dci_completeness",
    "dci_disentanglement",
    "dci_score",
    "discrete_entropy",
    "factor_vae_score",
    "histogram_discretize",
    "mig",
    "mig_score",
    "modularity",
    "modularity_from_mutual_information",
    "modularity_score",
    "mutual_information_matrix",
    "omes",
    "omes_alpha_sweep",
    "omes_noise_floor",
    "sample_codes",
    "sample_omes_pairs",
    "sap",
    "sap_score",
]
