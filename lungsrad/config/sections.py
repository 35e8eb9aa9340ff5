"""The config's sections: frozen dataclasses with defaults and a one-line comment per field,
bounds declared on the fields (`bounded`, checked by lungsrad.schema); `ExperimentConfig` joins
them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lungsrad.config.presets import MIN_NUM_CLASSES, REFERENCE_SPECAUGMENT_PROBABILITY
from lungsrad.config.versions import CONFIG_VERSION
from lungsrad.schema import bounded


@dataclass(frozen=True)
class DataConfig:
    """Where the ICBHI data lives and how cycles become features."""

    root: str | None = None  # ICBHI_final_database folder; the CLI's --data overrides it
    split_file: str | None = (
        None  # official split file; None: <root>/ICBHI_challenge_train_test.txt
    )
    sample_rate_hz: int = bounded(16000, above=0)  # every recording is resampled to this rate
    segment_seconds: float = bounded(8.0, above=0)  # each cycle is padded or cut to this length
    padding: Literal["repeat", "zero"] = "repeat"  # how short cycles are brought to length
    zero_padding: Literal["centre", "end"] = "centre"  # padding 'zero': cycle centred or at start
    # none, or reference: linear fades of sample_rate / 16 samples (1000 at 16 kHz) in and out
    # of the whole resampled recording, and out of every repeat-padded cycle
    fade: Literal["none", "reference"] = "reference"
    # truncated: int(t * rate) cuts, torchaudio.transforms.Resample (the reference code);
    # rounded: floor(t * rate + 1e-6) cuts, torchaudio.functional.resample (lungsrad 1)
    cycle_slicing: Literal["truncated", "rounded"] = "truncated"
    num_mel_bins: int = bounded(128, minimum=8)  # Kaldi fbank mel bins
    frame_length_ms: float = 25.0  # fbank window
    frame_shift_ms: float = 10.0  # fbank hop
    # audioset: (fbank - feature_mean) / (2 * feature_std); per_example: each cycle's own mean
    # and (unbiased) std instead, as the DASS reference code does
    normalization: Literal["audioset", "per_example"] = "audioset"
    feature_mean: float = -4.2677393  # AudioSet statistics used by AST (normalization audioset)
    feature_std: float = bounded(4.5689974, above=0)  # features are (fbank - mean) / (2 * std)
    # frames the model sees: null, the fbank's own (798 for 8 s); else the (frames, bins) map is
    # resized (bilinear) to this many frames on the training device, after augmentation
    model_frames: int | None = bounded(None, minimum=1, note="or null")
    cache_dir: str | None = None  # feature cache; None: ~/.cache/lungsrad/features
    # share of train patients held out for protocol 'validated'
    validation_fraction: float = bounded(0.2, above=0, below=1)
    split_seed: int = 0  # seed of the patient-disjoint validation carve-out
    fold: int | None = None  # 'foldwise' only: test fold 0..4 of RespireNet's patient split


@dataclass(frozen=True)
class ModelConfig:
    """The backbone: DASS (preset ... scan_backend) or AST (the ast_* keys)."""

    backbone: Literal["dass", "ast"] = "dass"  # which backbone family the run trains
    preset: Literal["small", "medium", "custom"] = "small"  # DASS; custom: dims, depths required
    dims: tuple[int, ...] | None = None  # DASS stage widths; None: the preset's
    depths: tuple[int, ...] | None = bounded(
        None, minimum=1
    )  # DASS blocks per stage; None: preset's
    # 4 (normal/crackle/wheeze/both); 2-class scores derive from these
    num_classes: int = bounded(4, minimum=MIN_NUM_CLASSES)
    # DASS stochastic depth; None: the preset's (custom: 0.0)
    drop_path_rate: float | None = bounded(None, minimum=0, below=1, note="or null")
    checkpoint: str | None = None  # release file, lungsrad checkpoint, or "none": random init
    scan_backend: Literal["auto", "reference", "chunked", "mamba_ssm", "triton"] = "auto"  # DASS
    ast_size: Literal["base", "tiny", "custom"] = "base"  # AST; custom: the three keys below
    ast_embed_dim: int | None = bounded(None, minimum=1)  # AST token width; None: the size's
    ast_depth: int | None = bounded(None, minimum=1)  # AST blocks; None: the size's
    # AST attention heads (must divide the width); None: the size's
    ast_num_heads: int | None = bounded(None, minimum=1)
    # How a checkpoint's positional embedding is adapted to this input: reference (YuanGongND/ast,
    # the correct layout) or patchmix_code (the patch-mix CL code's swapped layout, which made
    # Bae et al.'s published AST numbers).
    ast_pos_embed: Literal["reference", "patchmix_code"] = "reference"


@dataclass(frozen=True)
class RegularizationConfig:
    """Spectral-aware layer regularization: Gaussian smoothing of chosen block outputs."""

    enabled: bool = False  # smooth the chosen blocks' output maps (training and evaluation)
    padding: Literal["reflect", "zero"] = "reflect"  # map edges (zero: the authors' helper)
    sigma: float = bounded(1.0, above=0)  # Gaussian width in feature-map cells
    kernel_size: int = 3  # odd 1-D kernel length, applied along frequency and time
    stage: int = 2  # stage index as the reference numbers layers.0..layers.3
    blocks: tuple[int, ...] | Literal["all"] = (2, 3)  # block indices inside the stage, or all


@dataclass(frozen=True)
class PatchMixConfig:
    """Dual-axis patch-mix supervised contrastive learning."""

    mode: Literal["none", "ast_style", "time", "freq", "dual"] = "none"  # which mixes are used
    alpha: float = bounded(1.0, above=0)  # lambda ~ Beta(alpha, alpha)
    temperature: float = bounded(0.06, above=0)  # tau of the patch-mix InfoNCE loss
    projection_dim: int = bounded(768, minimum=1)  # output width of the projection head
    gradient_block: Literal["mixed", "target", "none"] = "mixed"  # side kept out of backbone grads
    # the clean (target) features go through the projection head; false: compared unprojected
    # (the reference's grad_block; projection_dim must then equal the backbone's feature width)
    project_target: bool = True
    train_projector: bool = True  # false: the head keeps its initial weights (ICBHI_HADES)
    # weight of the temporal-mix loss (and of ast_style's loss)
    time_loss_weight: float = bounded(1.0, minimum=0)
    freq_loss_weight: float = bounded(1.0, minimum=0)  # weight of the frequency-mix loss


@dataclass(frozen=True)
class MethodConfig:
    """The Lung-SRAD additions to plain DASS fine-tuning."""

    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    patch_mix: PatchMixConfig = field(default_factory=PatchMixConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, augmentation, evaluation protocol."""

    num_epochs: int = bounded(50, minimum=1)  # training epochs
    batch_size: int = bounded(16, minimum=1)  # training mini-batch
    eval_batch_size: int = bounded(64, minimum=1)  # evaluation mini-batch
    # peak lr (paper's value illegible; patch-mix AST convention)
    learning_rate: float = bounded(5e-5, above=0)
    # adam: L2 penalty in the gradient; adamw: decoupled decay
    weight_decay: float = bounded(1e-6, minimum=0)
    optimizer: Literal["adam", "adamw"] = "adam"  # torch.optim.Adam or AdamW (the reference's)
    # per-epoch lr schedule; cosine_from_epoch_1: the reference's counting (epoch e of E, 1-based,
    # at the cosine's value at e / E: the first epoch already below the peak, the last at the floor)
    schedule: Literal["cosine", "cosine_from_epoch_1", "step", "constant"] = "cosine"
    # cosine floor as a share of learning_rate (ref: 1e-3)
    min_learning_rate_factor: float = bounded(
        0.0, minimum=0, maximum=1, note="(a share of train.learning_rate)"
    )
    warmup_epochs: int = bounded(0, minimum=0)  # linear warm-up epochs (at most num_epochs)
    step_size_epochs: int = bounded(10, minimum=1)  # 'step' schedule: epochs between decays
    step_gamma: float = 0.5  # 'step' schedule: decay factor
    seed: int = 0  # seeds torch, numpy and python; logged with every run
    protocol: Literal["paper", "validated", "foldwise", "disjoint"] = (
        "paper"  # paper: best test epoch; others: val-selected (docs/protocols.md)
    )
    use_specaugment: bool = True  # time/frequency masking on training batches
    time_mask: int = bounded(160, minimum=0)  # SpecAugment max time-mask width (frames)
    freq_mask: int = bounded(48, minimum=0)  # SpecAugment max frequency-mask width (mel bins)
    num_time_masks: int = bounded(2, minimum=0)  # time masks per sample
    num_freq_masks: int = bounded(2, minimum=0)  # frequency masks per sample
    mask_fill: Literal["zero", "mean"] = "mean"  # masked cells: 0, or the sample's current mean
    # share of samples SpecAugment is applied to (the reference: P(N(0,1) <= 1) = 0.8413)
    specaugment_probability: float = bounded(
        REFERENCE_SPECAUGMENT_PROBABILITY, minimum=0, maximum=1
    )
    # reference: width int(U[0, max)), start uniform over the integers [0, size - width];
    # torchaudio: mask_along_axis_iid's continuous width and start, truncated (lungsrad 1)
    mask_sampling: Literal["reference", "torchaudio"] = "reference"
    drop_last: bool = False  # drop each epoch's last partial batch (the reference does)
    # null, or beta: after every optimiser step the whole state becomes beta * (before the step)
    # + (1 - beta) * (after), the reference's --ma_update --ma_beta
    weight_averaging: float | None = bounded(
        None, above=0, below=1, note="or null (a beta; the reference: 0.5)"
    )
    # the reported (best) epoch must have Se above this, in percent (the reference: 5); null: none
    min_sensitivity: float | None = bounded(
        None, minimum=0, below=100, note="or null (a percentage; the reference: 5)"
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, off on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when a device is visible
    # cap on optimiser steps per epoch (smoke runs)
    max_steps_per_epoch: int | None = bounded(None, minimum=1, note="or null")
    # clip gradient norm; None: no clipping
    grad_clip_norm: float | None = bounded(None, above=0, note="or null")
    # torch CPU threads; None: torch's default
    num_threads: int | None = bounded(None, minimum=1, note="or null")
    capture_step: bool = False  # replay full training batches as one CUDA graph (CUDA, bf16/off)
    # steps between host looks at the NaN/inf flag (0: epoch end)
    finite_check_steps: int = bounded(50, minimum=0)


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, replayable run description."""

    config_version: int = CONFIG_VERSION  # refuses configs written by another code version
    name: str = "lung_srad"  # run name used in outputs and tracking
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
