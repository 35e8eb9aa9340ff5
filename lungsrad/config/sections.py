"""The config's sections: frozen dataclasses with defaults and a one-line comment per field;
`ExperimentConfig` joins them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lungsrad.config.presets import REFERENCE_SPECAUGMENT_PROBABILITY
from lungsrad.config.versions import CONFIG_VERSION


@dataclass(frozen=True)
class DataConfig:
    """Where the ICBHI data lives and how cycles become features."""

    root: str | None = None  # ICBHI_final_database folder; the CLI's --data overrides it
    split_file: str | None = (
        None  # official split file; None: <root>/ICBHI_challenge_train_test.txt
    )
    sample_rate_hz: int = 16000  # every recording is resampled to this rate
    segment_seconds: float = 8.0  # each cycle is padded or cut to this length
    padding: Literal["repeat", "zero"] = "repeat"  # how short cycles are brought to length
    zero_padding: Literal["centre", "end"] = "centre"  # padding 'zero': cycle centred or at start
    # none, or reference: linear fades of sample_rate / 16 samples (1000 at 16 kHz) in and out
    # of the whole resampled recording, and out of every repeat-padded cycle
    fade: Literal["none", "reference"] = "reference"
    # truncated: int(t * rate) cuts, torchaudio.transforms.Resample (the reference code);
    # rounded: floor(t * rate + 1e-6) cuts, torchaudio.functional.resample (lungsrad 1)
    cycle_slicing: Literal["truncated", "rounded"] = "truncated"
    num_mel_bins: int = 128  # Kaldi fbank mel bins
    frame_length_ms: float = 25.0  # fbank window
    frame_shift_ms: float = 10.0  # fbank hop
    # audioset: (fbank - feature_mean) / (2 * feature_std); per_example: each cycle's own mean
    # and (unbiased) std instead, as the DASS reference code does
    normalization: Literal["audioset", "per_example"] = "audioset"
    feature_mean: float = -4.2677393  # AudioSet statistics used by AST (normalization audioset)
    feature_std: float = 4.5689974  # features are (fbank - mean) / (2 * std)
    # frames the model sees: null, the fbank's own (798 for 8 s); else the (frames, bins) map is
    # resized (bilinear) to this many frames on the training device, after augmentation
    model_frames: int | None = None
    cache_dir: str | None = None  # feature cache; None: ~/.cache/lungsrad/features
    validation_fraction: float = 0.2  # share of train patients held out for protocol 'validated'
    split_seed: int = 0  # seed of the patient-disjoint validation carve-out
    fold: int | None = None  # 'foldwise' only: test fold 0..4 of RespireNet's patient split


@dataclass(frozen=True)
class ModelConfig:
    """The backbone: DASS (preset ... scan_backend) or AST (the ast_* keys)."""

    backbone: Literal["dass", "ast"] = "dass"  # which backbone family the run trains
    preset: Literal["small", "medium", "custom"] = "small"  # DASS; custom: dims, depths required
    dims: tuple[int, ...] | None = None  # DASS stage widths; None: the preset's
    depths: tuple[int, ...] | None = None  # DASS blocks per stage; None: the preset's
    num_classes: int = 4  # 4 (normal/crackle/wheeze/both); 2-class scores derive from these
    drop_path_rate: float | None = None  # DASS stochastic depth; None: the preset's (custom: 0.0)
    checkpoint: str | None = None  # release file, lungsrad checkpoint, or "none": random init
    scan_backend: Literal["auto", "reference", "chunked", "mamba_ssm", "triton"] = "auto"  # DASS
    ast_size: Literal["base", "tiny", "custom"] = "base"  # AST; custom: the three keys below
    ast_embed_dim: int | None = None  # AST token width; None: the size's
    ast_depth: int | None = None  # AST blocks; None: the size's
    ast_num_heads: int | None = None  # AST attention heads (must divide the width); None: size's
    # How a checkpoint's positional embedding is adapted to this input: reference (YuanGongND/ast,
    # the correct layout) or patchmix_code (the patch-mix CL code's swapped layout, which made
    # Bae et al.'s published AST numbers).
    ast_pos_embed: Literal["reference", "patchmix_code"] = "reference"


@dataclass(frozen=True)
class RegularizationConfig:
    """Spectral-aware layer regularization: Gaussian smoothing of chosen block outputs."""

    enabled: bool = False  # smooth the chosen blocks' output maps (training and evaluation)
    padding: Literal["reflect", "zero"] = "reflect"  # map edges (zero: the authors' helper)
    sigma: float = 1.0  # Gaussian width in feature-map cells
    kernel_size: int = 3  # odd 1-D kernel length, applied along frequency and time
    stage: int = 2  # stage index as the reference numbers layers.0..layers.3
    blocks: tuple[int, ...] | Literal["all"] = (2, 3)  # block indices inside the stage, or all


@dataclass(frozen=True)
class PatchMixConfig:
    """Dual-axis patch-mix supervised contrastive learning."""

    mode: Literal["none", "ast_style", "time", "freq", "dual"] = "none"  # which mixes are used
    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha)
    temperature: float = 0.06  # tau of the patch-mix InfoNCE loss
    projection_dim: int = 768  # output width of the projection head
    gradient_block: Literal["mixed", "target", "none"] = "mixed"  # side kept out of backbone grads
    # the clean (target) features go through the projection head; false: compared unprojected
    # (the reference's grad_block; projection_dim must then equal the backbone's feature width)
    project_target: bool = True
    train_projector: bool = True  # false: the head keeps its initial weights (ICBHI_HADES)
    time_loss_weight: float = 1.0  # weight of the temporal-mix loss (and of ast_style's loss)
    freq_loss_weight: float = 1.0  # weight of the frequency-mix loss


@dataclass(frozen=True)
class MethodConfig:
    """The Lung-SRAD additions to plain DASS fine-tuning."""

    regularization: RegularizationConfig = field(default_factory=RegularizationConfig)
    patch_mix: PatchMixConfig = field(default_factory=PatchMixConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, augmentation, evaluation protocol."""

    num_epochs: int = 50  # training epochs
    batch_size: int = 16  # training mini-batch
    eval_batch_size: int = 64  # evaluation mini-batch
    learning_rate: float = 5e-5  # peak lr (paper's value illegible; patch-mix AST convention)
    weight_decay: float = 1e-6  # adam: L2 penalty in the gradient; adamw: decoupled decay
    optimizer: Literal["adam", "adamw"] = "adam"  # torch.optim.Adam or AdamW (the reference's)
    # per-epoch lr schedule; cosine_from_epoch_1: the reference's counting (epoch e of E, 1-based,
    # at the cosine's value at e / E: the first epoch already below the peak, the last at the floor)
    schedule: Literal["cosine", "cosine_from_epoch_1", "step", "constant"] = "cosine"
    min_learning_rate_factor: float = 0.0  # cosine floor as a share of learning_rate (ref: 1e-3)
    warmup_epochs: int = 0  # linear warm-up epochs before the schedule
    step_size_epochs: int = 10  # 'step' schedule: epochs between decays
    step_gamma: float = 0.5  # 'step' schedule: decay factor
    seed: int = 0  # seeds torch, numpy and python; logged with every run
    protocol: Literal["paper", "validated", "foldwise", "disjoint"] = (
        "paper"  # paper: best test epoch; others: val-selected (docs/protocols.md)
    )
    use_specaugment: bool = True  # time/frequency masking on training batches
    time_mask: int = 160  # SpecAugment max time-mask width (frames)
    freq_mask: int = 48  # SpecAugment max frequency-mask width (mel bins)
    num_time_masks: int = 2  # time masks per sample
    num_freq_masks: int = 2  # frequency masks per sample
    mask_fill: Literal["zero", "mean"] = "mean"  # masked cells: 0, or the sample's current mean
    # share of samples SpecAugment is applied to (the reference: P(N(0,1) <= 1) = 0.8413)
    specaugment_probability: float = REFERENCE_SPECAUGMENT_PROBABILITY
    # reference: width int(U[0, max)), start uniform over the integers [0, size - width];
    # torchaudio: mask_along_axis_iid's continuous width and start, truncated (lungsrad 1)
    mask_sampling: Literal["reference", "torchaudio"] = "reference"
    drop_last: bool = False  # drop each epoch's last partial batch (the reference does)
    # null, or beta: after every optimiser step the whole state becomes beta * (before the step)
    # + (1 - beta) * (after), the reference's --ma_update --ma_beta
    weight_averaging: float | None = None
    # the reported (best) epoch must have Se above this, in percent (the reference: 5); null: none
    min_sensitivity: float | None = None
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, off on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when a device is visible
    max_steps_per_epoch: int | None = None  # cap on optimiser steps per epoch (smoke runs)
    grad_clip_norm: float | None = None  # clip gradient norm; None: no clipping
    num_threads: int | None = None  # torch CPU threads; None: torch's default
    capture_step: bool = False  # replay full training batches as one CUDA graph (CUDA, bf16/off)
    finite_check_steps: int = 50  # steps between host looks at the NaN/inf flag (0: epoch end)


@dataclass(frozen=True)
class ExperimentConfig:
    """A complete, replayable run description."""

    config_version: int = CONFIG_VERSION  # refuses configs written by another code version
    name: str = "lung_srad"  # run name used in outputs and tracking
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
