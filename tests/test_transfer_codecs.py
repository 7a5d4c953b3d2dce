"""Transfer codecs: error bounds and exact byte counts, cache files and stores that hold encoded tensors, what a plan
sends (transmit), the backend sending through a codec, and the planner choosing among plan × codec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from droidspeak.codec import CODECS, get_codec
from droidspeak.engine import receiver_prefill, sender_prefill
from droidspeak.engine.cache import ContextCache
from droidspeak.engine.plan import parse_plan, prefill_cost
from droidspeak.errors import CacheFormatError, CodecError
from droidspeak.serve.planner import AdaptivePlanner, LatencyModel, PlanOption
from droidspeak.store import DiskStore, SafetensorsSerde
from droidspeak.transfer import loaded_layers, transmit
from test_store import make_cache

SHAPES = [
    ((2, 37, 8), "k"),
    ((2, 37, 8), "v"),
    ((37, 16), "e"),
    ((3, 1, 64), "k"),
    ((1, 33, 64), "v"),
    ((2, 0, 8), "k"),
]


def _spikes(shape, seed=0) -> torch.Tensor:
    """Gaussian values with an outlier channel and an outlier token, like real keys and hidden states."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    if x.numel():
        x[..., 0] *= 30
        x.view(-1, shape[-1])[0] += 50
    return x


@pytest.mark.parametrize("name", sorted(CODECS))
@pytest.mark.parametrize("shape, role", SHAPES)
def test_byte_counts_are_exact_without_encoding(name, shape, role):
    codec, tensor = get_codec(name), _spikes(shape)
    encoded = codec.encode(tensor, role)
    assert codec.nbytes(shape, tensor.dtype, role) == encoded.nbytes
    decoded = codec.decode(encoded, role)
    assert decoded.shape == tensor.shape and decoded.dtype == tensor.dtype


@pytest.mark.parametrize("name, bits", [("int8", 8), ("int4", 4)])
@pytest.mark.parametrize("shape, role", SHAPES[:5])
def test_integer_codecs_err_by_at_most_half_a_step_of_their_group(name, bits, shape, role):
    codec, tensor = get_codec(name), _spikes(shape, seed=1)
    encoded = codec.encode(tensor, role)
    error = (codec.decode(encoded, role) - tensor).abs()
    scale = encoded.parts["scale"].float()
    # every element's error is at most half its group's step (plus float16 rounding of the minimum)
    grouping = dict(codec.grouping)[role]
    length = tensor.shape[grouping.dim]
    size = grouping.group or length
    size += size % 2 if bits == 4 else 0
    step = scale.expand(*scale.shape[:-1], size).flatten(-2)[..., :length].movedim(-1, grouping.dim)
    low = (
        encoded.parts["min"]
        .float()
        .abs()
        .expand(*scale.shape[:-1], size)
        .flatten(-2)[..., :length]
        .movedim(-1, grouping.dim)
    )
    assert (error <= step / 2 + low * 2**-10 + 1e-6).all()
    assert error.max() > 0  # lossy: a codec that returned its input would not be compressing


def test_codecs_shrink_a_float32_cache_as_documented():
    cache = make_cache(tokens=256, head_dim=64, hidden=128)
    raw = cache.nbytes()
    ratios = {name: get_codec(name).cache_nbytes(cache) / raw for name in CODECS}
    assert ratios["lossless"] == 1 and ratios["bf16"] == 0.5
    assert 0.25 < ratios["int8"] < 0.26  # one byte a value, scale and minimum per channel
    assert ratios["int4"] == pytest.approx(5 / 32, rel=0.01)  # 4 bits + 32 bits of (scale, min) per 32 values


def test_constant_and_bfloat16_inputs_roundtrip():
    for name in ("int8", "int4"):
        codec = get_codec(name)
        constant = torch.full((2, 40, 8), 3.0)
        assert torch.equal(codec.roundtrip(constant, "k")[0], constant)
        bf16 = torch.randn(2, 40, 8).to(torch.bfloat16)
        back, _ = codec.roundtrip(bf16, "v")
        assert back.dtype == torch.bfloat16 and (back.float() - bf16.float()).abs().max() < 0.5


def test_bad_codecs_and_values_fail_clearly():
    with pytest.raises(CodecError, match="unknown transfer codec 'int3'.*lossless, bf16, int8, int4"):
        get_codec("int3")
    with pytest.raises(CodecError, match="float16's range"):
        get_codec("int8").encode(torch.full((1, 4, 2), 1e6), "k")
    with pytest.raises(CodecError, match="role"):
        get_codec("int4").encode(torch.zeros(2, 4, 8), "q")


# ---- on disk ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["bf16", "int8", "int4"])
def test_a_lossy_cache_file_decodes_to_exactly_the_codec_roundtrip(tmp_path, name):
    cache = make_cache(tokens=45)
    path = cache.save(tmp_path / "c.safetensors", codec=name)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        stored = sum(f.get_tensor(n).numel() * f.get_tensor(n).element_size() for n in f.keys() if n != "token_ids")
    assert meta["version"] == "3" and meta["codec"] == name  # a reader without codecs refuses version 3
    assert stored == get_codec(name).cache_nbytes(cache)
    loaded = ContextCache.load(path)
    codec = get_codec(name)
    for role, got, want in [*(("k", a, b) for a, b in zip(loaded.keys, cache.keys)),
                            *(("v", a, b) for a, b in zip(loaded.values, cache.values)),
                            *(("e", loaded.hidden[i], cache.hidden[i]) for i in cache.hidden)]:
        assert got.dtype == want.dtype and torch.equal(got, codec.roundtrip(want, role)[0])
    assert torch.equal(loaded.token_ids, cache.token_ids) and loaded.hidden_layers == cache.hidden_layers


def test_lossless_files_are_unchanged_version_2(tmp_path):
    path = make_cache().save(tmp_path / "c.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata()["version"] == "2" and "codec" not in f.metadata()


def test_a_corrupt_scale_or_codec_header_is_refused(tmp_path):
    store = DiskStore(tmp_path / "s", serde=SafetensorsSerde("int8"))
    key = store.put(make_cache())
    path = store.path(key)
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    start, _ = header["k.2.scale"]["data_offsets"]
    data[8 + header_len + start] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheFormatError, match="k.2.scale fails its checksum"):
        store.get_layer(key, 2)
    assert not store.contains(key)  # dropped and set aside, never served again
    unknown = make_cache(seed=1).save(tmp_path / "u.safetensors", codec="int4")
    text = unknown.read_bytes().replace(b'"codec":"int4"', b'"codec":"int5"')
    unknown.write_bytes(text)
    with pytest.raises(CacheFormatError, match="malformed cache header"):
        ContextCache.load(unknown)


def test_a_disk_store_counts_and_evicts_by_encoded_bytes(tmp_path):
    cache = make_cache()
    serde = SafetensorsSerde("int4")
    store = DiskStore(tmp_path / "s", serde=serde, capacity_bytes=2 * serde.nbytes(cache))
    keys = [store.put(make_cache(seed)) for seed in range(3)]  # three fit at full precision's half, two here
    assert store.keys() == keys[1:] and store.evictions == 1
    info = store.info(keys[1])
    assert info.dtype == torch.float32 and info.kv_heads == 2 and info.head_dim == 8 and info.hidden_size == 16


# ---- what a plan sends ------------------------------------------------------------------------------------
def test_transmit_sends_what_the_plan_loads_and_counts_it_like_the_cost():
    cache = make_cache(layers=4, tokens=20)
    plan = parse_plan("recompute:1-2", 4)
    assert loaded_layers(plan, 4) == ((0, 3), (1,))
    same, sent = transmit(cache, plan)
    cost = prefill_cost(plan, num_layers=4, context_tokens=20, kv_bytes_per_token_layer=2 * 2 * 8 * 4,
                        e_bytes_per_token=16 * 4)
    assert sent == cost.bytes_to_load and all(a is b for a, b in zip(same.keys, cache.keys))
    lossy, sent_int8 = transmit(cache, plan, "int8")
    assert sent_int8 < sent / 3
    assert torch.equal(lossy.keys[1], cache.keys[1]) and torch.equal(lossy.hidden[3], cache.hidden[3])  # not sent
    assert not torch.equal(lossy.keys[0], cache.keys[0]) and not torch.equal(lossy.hidden[1], cache.hidden[1])
    assert transmit(cache, parse_plan("full_prefill", 4), "int4")[1] == 0


def test_recomputing_every_layer_is_exact_through_any_codec(family):
    """The oracle survives a lossy link: a plan that loads nothing is the receiver's own prefill, bit for bit."""
    sender, receiver = family
    ids = [torch.arange(3, 40)]
    layers = receiver.stack.num_layers
    plan = parse_plan(f"recompute:0-{layers - 1}", layers)
    [cache] = sender_prefill(sender, ids, e_layers=plan)
    own = receiver_prefill(receiver, ids, "full_prefill")
    received, sent = transmit(cache, plan, "int4")
    ours = receiver_prefill(receiver, [received], plan)
    assert sent == 0
    for a, b in zip(ours.cache.layers, own.cache.layers, strict=True):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_a_sender_reusing_its_own_cache_through_int8_stays_close(families):
    """Self-reuse is exact lossless; through int8 it moves the receiver's K/V by about the codec's error, no more."""
    sender, _ = families("llama")
    ids = [torch.arange(5, 60)]
    layers = sender.stack.num_layers
    plan = parse_plan(f"recompute:{layers // 2}-{layers - 1}", layers)
    [cache] = sender_prefill(sender, ids, e_layers=plan)
    own = receiver_prefill(sender, ids, "full_prefill")
    exact = receiver_prefill(sender, [transmit(cache, plan)[0]], plan)
    lossy = receiver_prefill(sender, [transmit(cache, plan, "int8")[0]], plan)
    top = lambda batch: batch.cache.layers[layers - 1].keys  # noqa: E731  (recomputed from int8 E and K/V)
    torch.testing.assert_close(top(exact), top(own), atol=1e-5, rtol=1e-5)
    error = (top(lossy) - top(own)).norm() / top(own).norm()
    assert 0 < error < 0.05


# ---- the planner over plan × codec ------------------------------------------------------------------------
def test_the_planner_sends_a_lossy_codec_only_when_the_link_is_slow():
    tokens = 1000
    options = [PlanOption("full_prefill", 1.0, 30),
               PlanOption("recompute:10-19", 0.95, 10, e_bytes_per_token=2304, kv_bytes_per_token=307200),
               PlanOption("recompute:10-19", 0.94, 10, e_bytes_per_token=578, kv_bytes_per_token=77000, codec="int8",
                          decode_seconds_per_token=2e-5)]
    latency = LatencyModel(prefill={"full_prefill": (0.0, 3.0), "recompute:10-19": (0.0, 1.1)}, suffix=(0.0, 0.1),
                           options={o.name: o for o in options})
    assert options[2].name == "recompute:10-19 int8" and options[1].name == "recompute:10-19"
    planner = AdaptivePlanner(latency, options, min_quality=0.9, slo_ttft=float("inf"))
    choose = lambda gbps: planner.choose(batch=1, tokens=tokens, queued=1, waited=0.0, bandwidth_gbps=gbps)  # noqa: E731
    assert choose(0.125) == "recompute:10-19 int8"  # 1 Gb/s: 307 MB lossless take 2.5 s, past the compute
    assert choose(12.5) == "recompute:10-19"  # 100 Gb/s: the bytes hide behind compute; decoding would only add
    assert latency.prefill_seconds("recompute:10-19 int8", 1, tokens, None) == pytest.approx(1.1 + 0.02)
    strict = AdaptivePlanner(latency, options, min_quality=0.945, slo_ttft=float("inf"))
    assert strict.choose(batch=1, tokens=tokens, queued=1, waited=0.0, bandwidth_gbps=0.125) == "recompute:10-19"


# ---- the page ---------------------------------------------------------------------------------------------
def _rows(pair="p<-s"):
    """Sweep rows of one pair: the receiver, and a plan lossless and int8 (int8 one answer worse on each split)."""
    rows = []
    for split, n in (("profile", 8), ("test", 10)):
        full = [1.0] * n
        for plan, codec, scores in (
            ("full_prefill", "lossless", full),
            ("recompute:10-19", "lossless", full[:-1] + [0.0]),
            ("recompute:10-19", "int8", full[:-2] + [0.0, 0.0]),
        ):
            sent = None if plan == "full_prefill" else (80_000 if codec == "lossless" else 20_000) * n
            rows.append({"pair": pair, "task": "t", "split": split, "method": plan.split(":")[0], "plan": plan,
                         "resolved_plan": plan, "codec": codec, "quality": sum(scores) / n, "per_sample": scores,
                         "metric": "f1", "n_samples": n, "transfer_bytes": sent,
                         "cost": None if sent is None else {"context_tokens": n}})
    return rows


def _timing(pair="p<-s", kv_bytes=300_000_000):
    common = {"pair": pair, "task": "t", "plan": "recompute:10-19", "context_tokens": 1000, "num_layers": 30,
              "recomputed_layers": 10, "full_answer_ms": 3000.0, "plan_prefill_ms": 1000.0, "plan_answer_ms": 1100.0,
              "repeats": 1, "threads": 2, "raw_bytes": kv_bytes}
    return [{**common, "codec": "lossless", "e_bytes": 0, "kv_bytes": kv_bytes, "decode_ms": 0.0},
            {**common, "codec": "int8", "e_bytes": 0, "kv_bytes": kv_bytes // 4, "decode_ms": 20.0}]


def test_the_page_plans_by_the_profile_split_and_reports_the_test_split(tmp_path):
    from droidspeak.figures.codec_page import transfer_summary, write_transfer_page

    chosen = {"p<-s": "recompute:10-19"}
    [pair] = transfer_summary(_rows(), _timing(), chosen, links_gbit=(1, 100), tolerance=0.2)
    by_link = {p["gbit"]: p for p in pair["planner"]}
    assert by_link[1]["choice"] == "recompute:10-19 int8" and by_link[1]["lossless_choice"] == "recompute:10-19"
    assert by_link[1]["ttft"] < by_link[1]["lossless_ttft"]
    assert by_link[100]["choice"] == "recompute:10-19"  # a fast link: decoding would only add
    assert by_link[1]["quality"] == pytest.approx(0.8) and by_link[1]["vs_accepted"]["delta"] == pytest.approx(-0.1)
    int8 = next(e for e in pair["entries"] if e["codec"] == "int8")
    assert int8["bytes_per_token"] == 20_000 and int8["vs_lossless"]["delta"] == pytest.approx(-0.1)
    # int8 loses 1 of 8 answers on the profile split (0.125): out at a tolerance of 0.1 on top of the plan's 0.875
    [strict] = transfer_summary(_rows(), _timing(), chosen, links_gbit=(1,), tolerance=0.1)
    assert strict["planner"][0]["choice"] == "recompute:10-19"
    page = write_transfer_page(
        _rows(), _timing(), chosen, tmp_path, links_gbit=(1, 100), tolerance=0.2, command="make x",
        template=Path(__file__).resolve().parents[1] / "conf" / "pages" / "transfer.md.j2",
    )
    text = page.read_text()
    assert (
        "`recompute:10-19 int8`" in text and "TTFT 100 Gb/s" in text and (tmp_path / "fig_transfer_codecs.png").exists()
    )


def test_several_timed_contexts_give_median_terms_and_a_gain_with_its_range(tmp_path):
    from droidspeak.figures.codec_page import transfer_summary, write_transfer_page

    chosen = {"p<-s": "recompute:10-19"}
    timing = [{**row, "context_index": index, "kv_bytes": row["kv_bytes"] * scale, "context_tokens": 1000 * scale}
              for index, scale in enumerate((1, 2, 3)) for row in _timing()]
    [pair] = transfer_summary(_rows(), timing, chosen, links_gbit=(1,), tolerance=0.2)
    (link,) = pair["planner"]
    low, high = link["gain_range"]
    assert pair["timed_contexts"] == 3 and pair["tokens"] == 2000  # the median context
    assert low < link["gain"] < high  # one gain per context, the median quoted with its range
    [single] = transfer_summary(_rows(), _timing(), chosen, links_gbit=(1,), tolerance=0.2)
    assert single["planner"][0]["gain_range"] is None  # one context: no range to give
    assert single["planner"][0]["gain"] == pytest.approx(single["planner"][0]["lossless_ttft"]
                                                         / single["planner"][0]["ttft"])
    page = write_transfer_page(_rows(), timing, chosen, tmp_path, links_gbit=(1,), tolerance=0.2, command="make x",
                               template=Path(__file__).resolve().parents[1] / "conf" / "pages" / "transfer.md.j2")
    assert f"{link['gain']:.2f}× [{low:.2f}–{high:.2f}]" in page.read_text()
    assert "a cheap timing" in page.read_text()  # 3 contexts x 1 round is below 5 x 3


def test_the_page_refuses_a_pair_without_its_receiver_rows():
    from droidspeak.figures.codec_page import transfer_summary
    from droidspeak.figures.style import FigureDataError

    rows = [r for r in _rows() if not (r["plan"] == "full_prefill" and r["split"] == "profile")]
    with pytest.raises(FigureDataError, match="receiver's rows on both splits"):
        transfer_summary(rows, _timing(), {"p<-s": "recompute:10-19"})
