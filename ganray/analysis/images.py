"""Images of the best trial: stored grids, the progression GIF, style figures, filters, activations.

Stored grids are read as they are (samples/epoch_NNNN.png, fixed noise); the
model figures come from the trial's checkpoint at its best epoch (else its
newest kept one), loaded on CPU. A file that does not decode is reported and
skipped.
"""

from __future__ import annotations

import functools
import io
import logging
from typing import Any

import torch
from PIL import Image, ImageDraw

from ganray.analysis import inspect
from ganray.analysis.experiment import Problem, Trial
from ganray.analysis.plots import Figure
from ganray.inference import seed_noise
from ganray.storage import Storage
from ganray.train.artifacts import images_to_png

log = logging.getLogger("ganray.analysis")

GIF_MS_PER_FRAME = 500
ROW_SEEDS, COL_SEEDS = [101, 102, 103], [201, 202, 203, 204]  # style-mixing grid sources
MIX_SEEDS = [301, 302, 303, 304, 305]  # the 5-latent mixing
TRUNC_SEEDS, PSIS = [401, 402, 403], [0.0, 0.25, 0.5, 0.75, 1.0]
INTERP_FRAMES = 12


def decode(data: bytes) -> Image.Image:
    """A fully decoded image (raises on a truncated or corrupt file)."""
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def _labelled(im: Image.Image, text: str) -> Image.Image:
    """``im`` with a 12 px strip on top holding ``text`` (so every GIF frame says its epoch)."""
    rgb = im.convert("RGB")
    out = Image.new("RGB", (rgb.width, rgb.height + 12), "white")
    out.paste(rgb, (0, 12))
    ImageDraw.Draw(out).text((2, 0), text, fill="black")
    return out


def gif_bytes(frames: list[Image.Image], ms: int = GIF_MS_PER_FRAME) -> bytes:
    buf = io.BytesIO()
    frames[0].save(
        buf, format="GIF", save_all=True, append_images=frames[1:], duration=ms, loop=0, optimize=False
    )
    return buf.getvalue()


def grid_figures(trial: Trial, storage: Storage, problems: list[Problem]) -> list[Figure]:
    """The trial's grids at epoch 0, middle and last, and a GIF with one frame per stored grid."""
    decoded: dict[int, tuple[bytes, Image.Image]] = {}
    for epoch, uri in trial.grids.items():
        try:
            data = storage.read_bytes(uri)
            decoded[epoch] = (data, decode(data))
        except Exception as e:  # noqa: BLE001 - PIL raises many types on bad bytes
            problems.append(Problem(uri, f"sample grid does not decode ({type(e).__name__}); skipped"))
    if not decoded:
        return []
    epochs = sorted(decoded)
    picks = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
    out = [
        Figure(
            f"images/grid_epoch_{e:04d}.png",
            f"Samples of trial {trial.trial_id} at epoch {e} (fixed noise{', before training' if e == 0 else ''})",
            decoded[e][0],
        )  # fmt: skip
        for e in picks
    ]
    frames = [_labelled(decoded[e][1], f"{trial.trial_id} epoch {e}") for e in epochs]
    out.append(
        Figure(
            "images/progression.gif",
            f"Progression of trial {trial.trial_id}: one frame per stored grid, epochs {epochs[0]}-{epochs[-1]} ({len(frames)} frames)",  # fmt: skip
            gif_bytes(frames),
        )
    )
    return out


def _png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    return images_to_png(images, nrow)


def _gif_of(images: torch.Tensor) -> bytes:
    return gif_bytes([decode(_png(images[i : i + 1], 1)).convert("RGB") for i in range(images.shape[0])], 150)


def has_mapping(G: torch.nn.Module) -> bool:
    """True if G has a mapping network (the style tools' interface: mapping, synthesis, num_ws)."""
    return all(hasattr(G, a) for a in ("mapping", "synthesis", "num_ws"))


def _span(a: int, b: int, noun: str) -> str:
    """'layer 2' or 'layers 0-1' (no noun: '16' or '4-8')."""
    if a == b:
        return f"{noun} {a}".strip()
    return f"{noun}s {a}-{b}".strip() if noun else f"{a}-{b}"


def _split(num_ws: int, k: int) -> list[list[int]]:
    """Style indices 0..num_ws-1 in k contiguous blocks (some empty when num_ws < k)."""
    return [list(range(i * num_ws // k, (i + 1) * num_ws // k)) for i in range(k)]


def style_figures(G: torch.nn.Module, where: str) -> list[Figure]:
    """Style mixing (coarse/middle/fine), 5-latent mixing, truncation sweep, Z and W interpolation,
    drawn with ganray.style (constant noise inputs, so only the styles change)."""
    from ganray import style

    out = []
    z = functools.partial(style.z_from_seeds, latent_dim=G.latent_dim)
    res = style.ws_resolutions(G)
    for name in ("coarse", "middle", "fine"):
        layers = style.layer_range(G, name)
        if not layers or len(layers) == G.num_ws:
            continue  # no such layers at this resolution, or all of them (no mixing to show)
        img = style.mixing_grid(G, z(ROW_SEEDS), z(COL_SEEDS), layers)
        px = sorted({res[i] for i in layers})
        what = f"style {_span(layers[0], layers[-1], 'layer')} of 0-{G.num_ws - 1}, {_span(px[0], px[-1], '')} px"
        cap = f"Style mixing, {name} styles ({what}) from the top row into the left column; {where}"  # fmt: skip
        out.append(Figure(f"images/style_mixing_{name}.png", cap, _png(img, len(COL_SEEDS) + 1)))
    if G.num_ws > 1:
        blocks = _split(G.num_ws, len(MIX_SEEDS))
        zs = [z([s]) for s in MIX_SEEDS]
        img = torch.cat([style.images_from_seeds(G, MIX_SEEDS), style.mix_k(G, zs, blocks[1:])])
        cap = f"5-latent mixing: the five sources, then one image whose {G.num_ws} style layers are split among them in order; {where}"  # fmt: skip
        out.append(Figure("images/mixing_5_latents.png", cap, _png(img, len(MIX_SEEDS) + 1)))
    img = torch.cat([style.images_from_seeds(G, [s], psi) for s in TRUNC_SEEDS for psi in PSIS])
    cap = f"Truncation sweep, psi {', '.join(map(str, PSIS))} (left to right; psi 0 = the W average), one row per seed; {where}"  # fmt: skip
    out.append(Figure("images/truncation.png", cap, _png(img, len(PSIS))))
    for space in ("z", "w"):
        frames = style.interpolate(G, z([11]), z([12]), INTERP_FRAMES, space)[:, 0]
        how = "slerp in Z" if space == "z" else "lerp in W"
        out.append(Figure(f"images/interp_{space}.gif", f"Interpolation between seeds 11 and 12, {how}, {INTERP_FRAMES} frames; {where}", _gif_of(frames)))  # fmt: skip
    return out


def network_figures(G: torch.nn.Module, D: torch.nn.Module | None, where: str) -> tuple[list[Figure], str]:
    """First-layer filters of G and D, an early and a late G block's activations; the architecture text."""
    out = []
    for net, label in ((G, "G"), (D, "D")):
        got = inspect.first_layer_filters(net) if net is not None else None
        if got:
            name, tiles = got
            out.append(Figure(f"images/filters_{label}.png", f"{label}'s first-layer filters ({name}, {tiles.shape[0]} shown, each scaled to its range); {where}", _png(tiles)))  # fmt: skip
    z = seed_noise([7], G.latent_dim)
    for which, label in ((0, "early"), (-2, "late")):
        if len(inspect.conv_layers(G)) < 2 and label == "late":
            continue
        got = inspect.block_activations(G, z, which)
        if got:
            name, tiles = got
            cap = f"Activations of {'an early' if which == 0 else 'a late'} G block ({name}), {tiles.shape[0]} channels, seed 7; {where}"  # fmt: skip
            out.append(Figure(f"images/activations_{label}.png", cap, _png(tiles)))
    arch = inspect.architecture(G, "Generator")
    if D is not None:
        arch += "\n\n" + inspect.architecture(D, "Discriminator")
    return out, arch


def load_networks(
    trial: Trial, epoch: int | None, storage: Storage, problems: list[Problem]
) -> tuple[Any, Any, int] | None:
    """(G with EMA weights if kept, D, epoch) from the checkpoint at ``epoch``, else the newest readable one."""
    from ganray import checkpoint as ckpt
    from ganray.inference import generator_from_state
    from ganray.models import build_models

    infos = sorted(trial.checkpoints, key=lambda c: (c.epoch != epoch, -c.epoch))
    for info in infos:
        try:
            state = ckpt.load_checkpoint(storage, info.uri, info.sha256)
            G, cfg, _ = generator_from_state(state)
            _, D = build_models(cfg.model)
            D.load_state_dict(state["D"])
            return G, D.eval(), info.epoch
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint is reported and skipped
            problems.append(Problem(info.uri, f"checkpoint not usable ({type(e).__name__}: {e}); skipped"))
    return None


def model_figures(
    trial: Trial, epoch: int | None, storage: Storage, problems: list[Problem]
) -> tuple[list[Figure], str]:
    """Everything drawn from the trial's networks: style figures (mapping G only), filters, activations."""
    nets = load_networks(trial, epoch, storage, problems)
    if nets is None:
        if trial.checkpoints or trial.history:
            problems.append(Problem(trial.run_uri, "no usable checkpoint: style, filter and activation figures skipped"))  # fmt: skip
        return [], ""
    G, D, at = nets
    where = f"trial {trial.trial_id}, epoch {at}"
    torch.manual_seed(0)
    out = style_figures(G, where) if has_mapping(G) else []
    net, arch = network_figures(G, D, where)
    return out + net, f"{where}\n\n{arch}"
