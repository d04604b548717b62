"""Training and heads configuration: plain dataclasses (no torch), stored in heads files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HeadsConfig:
    """Everything that shapes the trained modules (stored in the heads file header).
    The defaults describe the oldest heads files (a file's header lists only what it set);
    the trainer's recipe is TrainConfig's `heads`."""

    embed_dim: int = 512  # per member
    hidden: int = 1024
    dropout: float = 0.2
    img_tail: int = 0  # CNN stages fine-tuned (0 = frozen)
    img_layers: int = 1  # pooled outputs of the last N CNN stages, concatenated
    img_probs: bool = False  # + the CNN's ImageNet class probabilities
    img_pool: str = "avg"  # avg | attn
    txt_tail: int = 0  # BERT layers fine-tuned (0 = frozen pooled embedding)
    residual: bool = True  # projection = linear + MLP (the MLP learns a correction)
    flip_tta: bool = False  # average an image with its mirror image at encode time
    members: int = 1  # independently trained projection pairs, concatenated (an ensemble)

    @property
    def cut(self) -> int:
        """CNN stages after the cached trunk: the fine-tuned ones and those whose pooled
        outputs are features (the trunk's own output is the first of those)."""
        return max(self.img_tail, self.img_layers - 1)

    @property
    def frozen_stages(self) -> int:
        """The first of the `cut` stages, which only compute features (not trained)."""
        return self.cut - self.img_tail

    @property
    def out_dim(self) -> int:
        return self.embed_dim * self.members

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadsConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)



# The shipped recipe; each choice measured on Flickr8k dev (heads/TRAINING.md).
RECIPE = HeadsConfig(embed_dim=256, img_layers=3, img_probs=True, flip_tta=True, members=3)


@dataclass
class TrainConfig:
    heads: HeadsConfig = field(default_factory=lambda: RECIPE)
    epochs: int = 12
    batch: int = 256
    lr: float = 1e-3  # projections, pooling, temperature
    tail_lr: float = 1e-4  # pretrained CNN stages (and BERT layers unless txt_tail_lr)
    txt_tail_lr: float | None = None  # pretrained BERT layers
    weight_decay: float = 0.02
    warmup_epochs: float = 1.0
    views: tuple[str, ...] = ("orig", "flip")
    all_captions: bool = True  # every caption of a batch's images, multi-positive InfoNCE
    hard_negative_weight: float = 0.0  # VSE++ max-violation hinge (one caption per image only)
    hard_negative_margin: float = 0.2
    label_smoothing: float = 0.0
    seed: int = 0
    select_by: str = "rsum1"  # dev metric that picks the best epoch: R@1 T->I + R@1 I->T
