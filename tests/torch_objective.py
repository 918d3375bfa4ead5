"""SpectralKD's objective (SPEC.md 2-3) written in PyTorch: the tests' oracle and the benchmarks'
baseline.

Written from the paper and its public code's formulas, in the reference's own layout (NCHW),
so that our channels-last keras.ops implementation is checked against an independent one.

It lives beside the tests, not in the installed package: users never need it, and it needs
torch. Tests import it as `import torch_objective` (tests/ is on pytest's path, like
timm_oracle.py); benchmarks/distill_step.py puts tests/ on `sys.path` and imports it the same way.
"""

import torch
import torch.nn.functional as F


def to_nchw(x):
    """(B, H, W, C) numpy/torch -> (B, C, H, W) float32 torch tensor."""
    x = torch.as_tensor(x, dtype=torch.float32)
    return x.permute(0, 3, 1, 2)


def pool_channels(teacher, out_channels):
    """Adaptive average pooling over the channel axis of an NCHW tensor, as the reference."""
    batch, channels, height, width = teacher.shape
    flat = teacher.permute(0, 2, 3, 1).reshape(-1, 1, channels)
    pooled = F.adaptive_avg_pool1d(flat, out_channels)
    return pooled.reshape(batch, height, width, out_channels).permute(0, 3, 1, 2)


def spectral_pair_loss(student_nchw, teacher_nchw):
    """MSE between stacked (real, imag) of the ortho rfft2 over (H, W) of both maps."""
    if teacher_nchw.shape[1] != student_nchw.shape[1]:
        teacher_nchw = pool_channels(teacher_nchw, student_nchw.shape[1])
    student_fft = torch.fft.rfft2(student_nchw, norm="ortho")
    teacher_fft = torch.fft.rfft2(teacher_nchw, norm="ortho")
    student_stack = torch.stack([student_fft.real, student_fft.imag], dim=-1)
    teacher_stack = torch.stack([teacher_fft.real, teacher_fft.imag], dim=-1)
    return F.mse_loss(student_stack, teacher_stack)


def spectral_alignment_loss(student_maps, teacher_maps):
    losses = [spectral_pair_loss(s, t) for s, t in zip(student_maps, teacher_maps)]
    return sum(losses) / len(losses), losses


def objective(
    student_logits,
    teacher_logits,
    labels,
    student_maps=(),
    teacher_maps=(),
    mode="soft",
    alpha=0.9,
    beta=1.0,
    spectral_weight=0.2,
    temperature=1.0,
    label_smoothing=0.1,
):
    """SPEC.md 3's total loss and its terms, as a dict of torch scalars."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    zero = torch.zeros(())
    terms = {"ce": ce, "kd": zero, "spectral": zero}
    if mode == "none":
        terms["total"] = ce
        return terms
    total = (1 - alpha) * ce
    if mode == "soft":
        tau = temperature
        kd = F.kl_div(
            F.log_softmax(student_logits / tau, dim=1),
            F.log_softmax(teacher_logits / tau, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (tau * tau)
        terms["kd"] = kd
        total = total + alpha * kd
    elif mode == "hard":
        kd = F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))
        terms["kd"] = kd
        total = total + alpha * kd
    if len(student_maps):
        spectral, _ = spectral_alignment_loss(student_maps, teacher_maps)
        terms["spectral"] = spectral
        total = total + beta * spectral_weight * spectral
    terms["total"] = total
    return terms
