"""The experiment configuration (:class:`ExperimentConfig`): settings objects and presets
(:mod:`.settings`), validation helpers (:mod:`.checks`), the typed object (:mod:`.experiment`) and its
file form in sections with the one identity (:mod:`.sections`)."""
from ..data.filelists import SCENARIOS
from .checks import ConfigError
from .experiment import ExperimentConfig, set_key
from .sections import (IDENTITY_SECTIONS, SCHEMA_VERSION, SECTION_KEYS, SECTIONS, applies, flat_key, flatten,
                       section_path, without)
from .settings import (DEVICES, FIDELITY_CHOICES, FULL_MINIBATCHES_SINCE, GLR_CHOICES, GLR_PROFILES,
                       INFERENCE_CHUNK_CPU, INFERENCE_CHUNK_GPU, LATENT_DTYPES, LATENT_LAYERS, PROFILE_SWITCHES,
                       PROFILES, BRNSettings, Fidelity, GLRSettings, profile_fidelity)

__all__ = ["BRNSettings", "ConfigError", "DEVICES", "ExperimentConfig", "FIDELITY_CHOICES",
           "FULL_MINIBATCHES_SINCE", "Fidelity", "GLRSettings", "GLR_CHOICES", "GLR_PROFILES",
           "IDENTITY_SECTIONS", "INFERENCE_CHUNK_CPU", "INFERENCE_CHUNK_GPU", "LATENT_DTYPES", "LATENT_LAYERS",
           "PROFILES", "PROFILE_SWITCHES", "SCENARIOS", "SCHEMA_VERSION", "SECTIONS", "SECTION_KEYS", "applies",
           "flat_key", "flatten", "profile_fidelity", "section_path", "set_key", "without"]
