"""The optional third modality of ShapesWorld: a short synthetic sound per scene, and its log-mel spectrogram.

Serves chapter 2 ("optional third modality (audio) bound through images"). Each object sounds one note, objects
play one after another from left to right: **colour -> pitch**, **shape -> timbre** (which harmonics sound),
**size -> loudness**. The spectrogram is computed with ``torch.stft`` and a triangular mel filterbank, so it is a
small image-like tensor (``n_mels`` x frames) any CNN can read.
"""

from __future__ import annotations

import math

import torch

from mmcourse._checks import check_tensor
from mmcourse.data.vocab import COLORS, SHAPES

PITCH_HZ: dict[str, float] = {
    "red": 196.0,  # G3
    "green": 246.9,  # B3
    "blue": 311.1,  # D#4
    "yellow": 392.0,  # G4
    "purple": 493.9,  # B4
    "orange": 622.3,  # D#5
}
"""Fundamental frequency of each colour: major thirds apart, all partials stay below 4 kHz."""

HARMONICS: dict[str, tuple[float, ...]] = {
    "circle": (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # pure tone
    "square": (1.0, 0.0, 0.6, 0.0, 0.4, 0.0),  # odd harmonics (clarinet-like)
    "triangle": (1.0, 0.7, 0.0, 0.5, 0.0, 0.0),  # octaves
    "cross": (1.0, 0.5, 0.4, 0.3, 0.25, 0.2),  # every harmonic (sawtooth-like)
}
"""Amplitude of harmonics 1..6 for each shape."""

SIZE_GAIN: tuple[float, ...] = (0.5, 1.0)
"""Loudness of small / large objects."""

SAMPLE_RATE = 8000
_CHUNK = 512
ATTACK_S, RELEASE_S = 0.005, 0.02

_PITCH = torch.tensor([PITCH_HZ[c] for c in COLORS])
_HARMONICS = torch.tensor([HARMONICS[s] for s in SHAPES])
_HARMONICS = _HARMONICS / _HARMONICS.sum(dim=1, keepdim=True)  # peak amplitude <= gain
_GAIN = torch.tensor(SIZE_GAIN)


def synthesize(
    colors: torch.Tensor,
    shapes: torch.Tensor,
    sizes: torch.Tensor,
    positions: torch.Tensor,
    num_objects: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    seconds: float = 0.25,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One waveform per scene: the objects' notes in left-to-right order, each for ``seconds / n`` of the clip.

    Args:
        colors, shapes, sizes: (N, K) ids (-1 where absent); positions: (N, K, 2) in [0, 1]; num_objects: (N,).
        noise: standard deviation of white noise added to the waveform.
    Returns:
        waveform: (N, T) float32, T = round(seconds * sample_rate); |value| <= 1 before noise is added.
    """
    n, k = colors.shape
    length = int(round(seconds * sample_rate))
    # left-to-right order of the objects; absent ones sort last
    x = torch.where(colors >= 0, positions[..., 0], torch.full_like(positions[..., 0], 2.0))
    order = x.argsort(dim=1)  # (N, K)
    colors, shapes, sizes = (torch.gather(a, 1, order) for a in (colors, shapes, sizes))
    wave = torch.zeros(n, length)
    for count in range(1, k + 1):
        note_len = length // count  # every note of these scenes has this many samples
        all_rows = (num_objects == count).nonzero(as_tuple=True)[0]
        for rows in all_rows.split(_CHUNK):  # chunks keep temporaries small (cheap to allocate)
            notes = _notes(  # (rows * count, note_len), one row per note, in playing order
                colors[rows, :count].reshape(-1),
                shapes[rows, :count].reshape(-1),
                sizes[rows, :count].reshape(-1),
                note_len,
                sample_rate,
            )
            wave[rows, : count * note_len] = notes.reshape(rows.numel(), count * note_len)
    if noise > 0:
        wave = wave + noise * torch.randn(n, length, generator=generator)
    return wave


def _notes(colors: torch.Tensor, shapes: torch.Tensor, sizes: torch.Tensor, length: int, sample_rate: int):
    """M notes of ``length`` samples: (M, length), from (M,) colour / shape / size ids."""
    t = torch.arange(length, dtype=torch.float32) / sample_rate  # (L,) seconds
    envelope = torch.minimum(t / ATTACK_S, (length / sample_rate - t) / RELEASE_S).clamp(0.0, 1.0)  # (L,)
    phase = (2.0 * math.pi) * _PITCH[colors][:, None] * t[None, :]  # (M, L)
    weights = _HARMONICS[shapes] * _GAIN[sizes][:, None]  # (M, 6)
    # sin(h p) for h = 1..6 by the Chebyshev recurrence sin((h+1)p) = 2 cos(p) sin(hp) - sin((h-1)p)
    two_cos = 2.0 * torch.cos(phase)
    previous, current = torch.zeros_like(phase), torch.sin(phase)
    wave = weights[:, 0, None] * current
    for h in range(1, weights.size(1)):
        previous, current = current, two_cos * current - previous
        wave += weights[:, h, None] * current
    return wave * envelope


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 60.0) -> torch.Tensor:
    """Triangular filters evenly spaced on the mel scale from ``f_min`` to Nyquist: (n_mels, n_freqs)."""

    def to_mel(f):
        return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)

    def to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    edges_hz = to_hz(torch.linspace(float(to_mel(f_min)), float(to_mel(sample_rate / 2)), n_mels + 2))
    freqs = torch.linspace(0.0, sample_rate / 2, n_freqs, dtype=torch.float64)
    low, centre, high = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (freqs[None, :] - low) / (centre - low)
    falling = (high - freqs[None, :]) / (high - centre)
    return torch.minimum(rising, falling).clamp(min=0.0).float()


def log_mel_spectrogram(
    waveform: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = 256,
    hop_length: int = 64,
    n_mels: int = 32,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``log(mel_filterbank @ |STFT|^2 + eps)`` with a Hann window.

    Args:
        waveform: (N, T) or (T,).
    Returns:
        (N, n_mels, frames) or (n_mels, frames), frames = 1 + T // hop_length.
    """
    check_tensor(waveform, "waveform", ndim=(1, 2), floating=True)
    single = waveform.dim() == 1
    wave = waveform[None] if single else waveform
    window = torch.hann_window(n_fft, device=wave.device)
    fbank = mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).to(wave.device)
    parts = []
    for part in wave.split(_CHUNK):  # chunks keep the complex STFT small
        spec = torch.stft(
            part, n_fft=n_fft, hop_length=hop_length, window=window, center=True, return_complex=True
        )  # (n, n_fft // 2 + 1, frames)
        power = spec.real.square() + spec.imag.square()  # |X|^2
        parts.append(torch.log(torch.einsum("mf,nft->nmt", fbank, power) + eps))
    mel = torch.cat(parts)
    return mel[0] if single else mel
