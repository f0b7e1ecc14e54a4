"""Training: ``DiffusionTrainer``, field datasets, synthetic scientific fields, quality evaluation and the
exact posterior of Gaussian random fields (the check of posterior samplers)."""
from .datasets import (
    ArrayDataset,
    BatchOrder,
    FieldDataset,
    ImageFolderDataset,
    SyntheticFieldDataset,
    as_dataset,
    load_fields,
    load_paired_npz,
)
from .evaluation import (
    evaluate,
    fit_power_law_exponent,
    histogram_l1,
    plot_spectra,
    power_law_grf_spectrum,
    radial_power_spectrum,
    spectrum_relative_error,
    wasserstein1,
)
from .fields import darcy_permeability, gaussian_random_field, generate_fields, grf_mode_variance, power_law_spectrum
from .losses import (
    OBJECTIVE_TO_PREDICTION_TYPE,
    MindScienceTrainer,
    mindscience_loss,
    mindscience_target,
    p2_loss_weights,
)
from .posterior import (
    GaussianFieldPrior,
    GaussianPosterior,
    calibration_floor,
    calibration_metrics,
    linear_gaussian_posterior,
    posterior_from_matrix,
)
from .recipes import dataset_from_spec, generate_samples, small_unet_config
from .trainer import DiffusionLoss, DiffusionTrainer, TrainerConfig, latest_checkpoint, learning_rate_at, snr_weights

__all__ = [
    "DiffusionTrainer", "TrainerConfig", "DiffusionLoss", "snr_weights", "learning_rate_at", "latest_checkpoint",
    "FieldDataset", "ArrayDataset", "ImageFolderDataset", "SyntheticFieldDataset", "BatchOrder", "as_dataset",
    "load_fields", "load_paired_npz", "dataset_from_spec", "generate_samples", "small_unet_config",
    "gaussian_random_field", "darcy_permeability", "generate_fields", "power_law_spectrum", "grf_mode_variance",
    "GaussianFieldPrior", "GaussianPosterior", "linear_gaussian_posterior", "posterior_from_matrix",
    "calibration_metrics", "calibration_floor",
    "MindScienceTrainer", "mindscience_loss", "mindscience_target", "p2_loss_weights", "OBJECTIVE_TO_PREDICTION_TYPE",
    "evaluate", "plot_spectra", "radial_power_spectrum", "spectrum_relative_error", "wasserstein1", "histogram_l1",
    "power_law_grf_spectrum", "fit_power_law_exponent",
]
