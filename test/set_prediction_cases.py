"""Random set-prediction cases shared by the matcher and criterion tests."""
import torch

STRIDE = 4   # predictions are at 1/4 of the input resolution


def make_batch(num_targets, num_queries=5, num_classes=3, size=(4, 6), seed=0, dtype=torch.float32,
               requires_grad=False):
    """Random outputs [B, N, ...] (leaves, optionally requiring grad) and targets with bool masks at
    STRIDE x the prediction size."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(num_targets)
    h, w = size
    outputs = {
        "pred_logits": torch.randn(batch, num_queries, num_classes, generator=gen),
        "pred_scores": torch.randn(batch, num_queries, 1, generator=gen),
        "pred_masks": 2 * torch.randn(batch, num_queries, h, w, generator=gen),
    }
    outputs = {k: v.to(dtype).requires_grad_(requires_grad) for k, v in outputs.items()}
    targets = [{"labels": torch.randint(num_classes, (k,), generator=gen),
                "masks": torch.rand(k, h * STRIDE, w * STRIDE, generator=gen) > 0.5} for k in num_targets]
    return outputs, targets


def downsample(masks):
    """Bilinear (align_corners=False) x1/4 resize written out: mean of the central 2x2 of each 4x4 cell."""
    k, height, width = masks.shape
    cells = masks.float().reshape(k, height // STRIDE, STRIDE, width // STRIDE, STRIDE)
    return cells[:, :, 1:3, :, 1:3].mean(dim=(2, 4))
