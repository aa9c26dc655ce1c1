"""A corpus of hostile weight files, built here at test time, each loaded by the real loaders in a
child process under a memory limit and a time limit.

Every case must end in one :class:`~pulse_engine.errors.PulseAuditError` line naming the right
reason: no traceback, no segfault, no hang, no allocation beyond the budget, a bounded message, and
no file written beside the weights. One server process imports torch once, sets
``RLIMIT_AS`` (its address space at start + :data:`EXTRA_MEMORY`), and forks one child per case;
each child gets a CPU-time limit (:data:`CASE_CPU_SECONDS`, ``RLIMIT_CPU``: a busy loop dies by
SIGXCPU however loaded the machine is) and a wall-clock alarm (:data:`HANG_SECONDS`, only for a
case blocked without using CPU), so a hang dies by a signal and a crash by its own, and reports how
much its peak resident memory grew while loading. No limit depends on the machine's load: on a
loaded machine a case takes longer in wall time, never more CPU time.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from test_safe_pickle import Reduce, load_fixture_tree, write_snapshot
from test_stylegan2 import save_tiny_checkpoint

from pulse_engine.errors import WeightsError
from pulse_engine.generators import folder_generators
from pulse_engine.generators.base import SHIFTED_CARD_FORMAT
from pulse_engine.generators.checkpoint import sha256_file
from pulse_engine.generators.gaussian_fit import compute_fit
from pulse_engine.generators.stylegan1 import TINY, StyleGAN1Mapping, StyleGAN1Synthesis, seeded_random_state
from pulse_engine.generators.stylegan2_loaders import fit_cache_path, load_stylegan2

EXTRA_MEMORY = 1 << 30  # 1 GiB over the server's address space after importing torch
CASE_CPU_SECONDS = 30  # CPU time of one case; the slowest refusal takes about 1 s
HANG_SECONDS = 600  # wall time of one case, reached only by a case that blocks
MAX_MESSAGE = 600
MAX_PEAK_GROWTH_MB = 300  # resident memory a refused case may add over the server's

SERVER = r'''
import json, os, resource, signal, sys, traceback
import torch
torch.set_num_threads(1)
from pathlib import Path
from pulse_engine.errors import PulseAuditError
from pulse_engine.generators import folder_generators, load_generator
from pulse_engine.generators.stylegan1 import TINY, load_stylegan1_ffhq

soft = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
LOADERS = {
    "generator": lambda p: load_generator(p),
    "stylegan1-tiny": lambda p: load_stylegan1_ffhq(Path(p), "cpu", fit_samples=200, config=TINY),
    "folders": lambda p: folder_generators(Path(p)),
}
results = []
for case in json.loads(Path(sys.argv[1]).read_text()):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        cpu = int(sys.argv[4])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        signal.alarm(int(sys.argv[5]))
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            LOADERS[case["loader"]](case["target"])
            out = {"kind": "loaded"}
        except PulseAuditError as exc:
            out = {"kind": "error", "message": str(exc)}
        except BaseException as exc:
            out = {"kind": "exception", "message": "".join(traceback.format_exception(exc))[-2000:]}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out["peak_growth_mb"] = (usage.ru_maxrss - start) / 1024
        out["cpu_s"] = usage.ru_utime + usage.ru_stime
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    out = json.loads(b"".join(chunks) or b'{"kind": "died", "peak_growth_mb": -1}')
    out.update(name=case["name"], status=status)
    results.append(out)
Path(sys.argv[2]).write_text(json.dumps(results))
'''


# --- builders of hostile files -------------------------------------------------------------------

def nested_key_pickle(levels: int = 200_000) -> bytes:
    """{((…(),…),): 1}: a tuple ``levels`` deep used as a dict key (hashing it recursed in C)."""
    return b"\x80\x02}" + b")" + b"\x85" * levels + b"K\x01s."


def nested_list_pickle(levels: int = 200_000) -> bytes:
    return b"\x80\x02" + b"]" * levels + b"a" * (levels - 1) + b"."


def _text(value: str) -> bytes:
    return b"X" + struct.pack("<I", len(value)) + value.encode()


def module_cycle_pickle() -> bytes:
    """An NVlabs-style ``G_ema`` (valid init_kwargs) whose ``_modules`` dict, memoised, is given G_ema itself
    after it is built: a cycle through the memo, which the depth scan cannot see (the module walk looped)."""
    kwargs = b"".join(_text(k) + b"K" + bytes([v]) for k, v in (("z_dim", 16), ("w_dim", 16), ("img_resolution", 8)))
    meta = (b"}(" + _text("type") + _text("class") + _text("class_name") + _text("Generator") + _text("state")
            + b"}(" + _text("_init_kwargs") + b"}(" + kwargs + b"u" + _text("_modules") + b"}q\x01uu")
    return (b"\x80\x02}" + _text("G_ema") + b"ctorch_utils.persistence\n_reconstruct_persistent_obj\n" + meta
            + b"\x85Rq\x02s" + b"h\x01" + _text("self") + b"h\x02s0.")


FROZENSET_BYTESTORAGE = b"\x80\x02cbuiltins\nfrozenset\nctorch\nByteStorage\nJ\x00\x00\x00\x80\x85R\x85R."


def zip_with_pickle(path: Path, data_pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A torch zip file whose data.pkl is ``data_pkl`` (and storage records ``records``)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
    return path


def storage_pid_pickle(numel: int, key: str = "0", size: tuple = (4,)) -> bytes:
    """data.pkl of {"g_ema": {"style.1.weight": tensor}} whose storage declares ``numel`` floats."""
    return (b"\x80\x02}X\x05\x00\x00\x00g_ema}X\x0e\x00\x00\x00style.1.weight"
            b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
            + b"X" + struct.pack("<I", len(key)) + key.encode() + b"X\x03\x00\x00\x00cpu"
            + b"J" + struct.pack("<i", numel) + b"tQK\x00" + pickle.dumps(size, 2)[2:-1]
            + pickle.dumps(tuple(1 for _ in size), 2)[2:-1] + b"\x89ccollections\nOrderedDict\n)RtRss.")


def legacy_storage_lie(path: Path, declared: int, header: int, payload: bytes) -> Path:
    """A legacy torch file whose single float storage declares ``declared`` elements, with the
    given length header and data."""
    buffer = torch.zeros(1)
    legit = path.with_suffix(".legit")
    torch.save({"g_ema": {"style.1.weight": buffer}}, legit, _use_new_zipfile_serialization=False)
    data = bytearray(legit.read_bytes())
    legit.unlink()
    tail = struct.pack("<q", 1) + struct.pack("<f", 0.0)
    assert data.endswith(tail)
    body = bytes(data[:-len(tail)]).replace(b"K\x01Ntq", b"J" + struct.pack("<i", min(declared, 2**31 - 1))
                                            + b"Ntq", 1)
    path.write_bytes(body + struct.pack("<q", header) + payload)
    return path


def nvlabs_variant(path: Path, edit) -> Path:
    snapshot = load_fixture_tree()
    edit(snapshot)
    return write_snapshot(path, snapshot, "pass\n")


def nvlabs_tensor(snapshot, dotted: str):
    module = snapshot["G_ema"]
    *parents, group, name = dotted.split(".")
    for part in parents:
        module = module.state["_modules"][part]
    return module.state[group], name


def set_nvlabs_tensor(snapshot, dotted: str, value) -> None:
    holder, name = nvlabs_tensor(snapshot, dotted)
    holder[name] = value


def dcgan_folder(folder: Path, arch: dict, state: dict | None = None, card_text: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    from pulse_engine.generators.dcgan import tiny_dcgan
    torch.save(state if state is not None else dict(tiny_dcgan().state_dict()), folder / "weights.pt")
    (folder / "card.json").write_text(card_text if card_text is not None else
                                      json.dumps({"architecture": {"family": "DCGAN", **arch}}))
    return folder


TINY_DCGAN = {"nz": 16, "ngf": 4, "resolution": 32, "channels": 3}


def stylegan1_folder(folder: Path, synthesis: bytes | None = None, pulse_fit: object = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(seeded_random_state(StyleGAN1Synthesis(TINY), 0), folder / "synthesis.pt")
    torch.save(seeded_random_state(StyleGAN1Mapping(TINY), 1), folder / "mapping.pt")
    if synthesis is not None:
        (folder / "synthesis.pt").write_bytes(synthesis)
    if pulse_fit is not None:
        torch.save(pulse_fit, folder / "pulse_gaussian_fit.pt")
    return folder


def shifted_folder(folder: Path, card_text: str | None = None, **changes) -> Path:
    """A ``shifted:`` member folder over ``dcgan-tiny`` (a valid direction), its card changed or replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(torch.zeros(1, 16), folder / "direction.pt")
    card = {"format": SHIFTED_CARD_FORMAT, "base": "dcgan-tiny", "alpha": 1.0,
            "direction": {"file": "direction.pt", "sha256": sha256_file(folder / "direction.pt")}} | changes
    (folder / "card.json").write_text(card_text if card_text is not None else json.dumps(card))
    return folder


def build_corpus(root: Path) -> list[dict]:
    """(name, loader, target, expected fragment of the message) for every hostile case."""
    cases: list[tuple[str, str, Path, str]] = []

    def add(name: str, target: Path, expect: str, loader: str = "generator", spec: str = "stylegan2") -> None:
        cases.append((name, loader, f"{spec}:{target}" if loader == "generator" else str(target), expect))

    def raw(name: str, data: bytes, expect: str, suffix: str = ".pkl") -> None:
        path = root / f"{name}{suffix}"
        path.write_bytes(data)
        add(name, path, expect)

    # pickles (NVlabs path) --------------------------------------------------------------------
    raw("nested_tuple_key", nested_key_pickle(), "levels deep")
    raw("nested_list", nested_list_pickle(), "levels deep")
    raw("frozenset_bytestorage", FROZENSET_BYTESTORAGE, "global 'torch.ByteStorage'")
    raw("os_system", pickle.dumps({"G_ema": Reduce(__import__("os").system, f"touch {root}/PWNED")}), "posix.system")
    raw("builtins_eval", pickle.dumps(Reduce(eval, ("1",))), "builtins.eval")
    raw("persistent_id", b"\x80\x02X\x01\x00\x00\x00xQ.", "persistent IDs are not supported")
    raw("opcode_flood", b"\x80\x02" + b"N0" * 600_000 + b"N.", "more than 500,000 opcodes")
    raw("missing_memo", b"\x80\x02h\x05.", "truncated or not a readable")
    raw("truncated_fixture", (Path(__file__).parent / "data/stylegan2/nvlabs_tiny.pkl").read_bytes()[:60_000],
        "truncated")
    raw("nv_module_cycle", module_cycle_pickle(), "appears twice in the module tree")
    raw("huge_key_repr", pickle.dumps({"x" * 5_000_000: 1}), "has no NVlabs 'G_ema' generator")
    three = torch.TypedStorage(wrap_storage=torch.zeros(3).untyped_storage(), dtype=torch.float32, _internal=True)
    embedded = pickle.dumps(three)  # pickles via torch.storage._load_from_bytes, as in NVlabs files
    lie = embedded.replace(struct.pack("<q", 3), struct.pack("<q", 1 << 40), 1)
    raw("embedded_storage_header_lie", lie, "declares")
    nested: list = [1]
    for _ in range(20):
        nested = [nested]
    raw("moderately_nested_no_generator", pickle.dumps(OrderedDict(a=nested)), "has no NVlabs 'G_ema' generator")
    storage = torch.TypedStorage(wrap_storage=torch.zeros(1).untyped_storage(), dtype=torch.float32, _internal=True)
    class Restated:  # Tensor.__setstate__ would set_() the checked tensor to a 2^40-element view
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2, (storage, 0, (1,), (1,), False, OrderedDict()),
                    (storage, 0, (1 << 20, 1 << 20), (0, 0)))

    raw("build_on_tensor", pickle.dumps({"G_ema": Restated()}), "BUILD opcode")
    raw("stride0_view", pickle.dumps(Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (65536, 65536), (0, 0),
                                            False, OrderedDict())), "needs more elements than its storage")

    def kwarg(group: str | None, key: str, value) -> callable:
        def edit(snapshot) -> None:
            kwargs = snapshot["G_ema"].state["_init_kwargs"]
            (kwargs[group] if group else kwargs)[key] = value
        return edit

    for name, edit, expect in (
        ("nv_resolution_2e30", kwarg(None, "img_resolution", 2**30), "size 1073741824 is outside"),
        ("nv_wdim_1e6", kwarg(None, "w_dim", 10**6), "style_dim 1000000 is outside"),
        ("nv_num_layers_1e9", kwarg("mapping_kwargs", "num_layers", 10**9), "n_mlp 1000000000 is outside"),
        ("nv_channels_huge", lambda s: (kwarg("synthesis_kwargs", "channel_max", 10**9)(s),
                                        kwarg("synthesis_kwargs", "channel_base", 10**12)(s)), "channels at 4 px"),
        ("nv_option_10mb", kwarg("synthesis_kwargs", "fancy", "y" * 10_000_000), "unknown option"),
        ("nv_filter_1e4_taps", kwarg("synthesis_kwargs", "resample_filter", [1.0] * 10**4), "resample_filter"),
        ("nv_nan_weight", lambda s: set_nvlabs_tensor(s, "synthesis.b8.conv0._parameters.weight",
                                                      torch.full((16, 32, 3, 3), float("nan"))), "NaN"),
        ("nv_inf_noise", lambda s: set_nvlabs_tensor(s, "synthesis.b4.conv1._buffers.noise_const",
                                                     torch.full((4, 4), float("inf"))), "NaN or infinite"),
        ("nv_wrong_shape", lambda s: set_nvlabs_tensor(s, "mapping.fc0._parameters.weight", torch.zeros(16, 17)),
         "init_kwargs and tensors disagree"),
        ("nv_filter_wrong_size", lambda s: set_nvlabs_tensor(s, "synthesis.b8.conv0._buffers.resample_filter",
                                                             torch.ones(5, 5)), "disagree"),
    ):
        add(name, nvlabs_variant(root / f"{name}.pkl", edit), expect)

    # rosinality / torch zip and legacy files ------------------------------------------------------
    one = torch.zeros(1)
    stride0 = {"style.1.weight": one.expand(32768, 32768), "input.input": one.expand(1, 512, 4, 4),
               "to_rgbs.0.conv.weight": one.expand(1, 3, 512, 1, 1),
               "convs.0.conv.weight": one.expand(1, 512, 512, 3, 3)}
    torch.save({"g_ema": stride0}, root / "stride0.pt")
    add("rosinality_stride0_4GB", root / "stride0.pt", "needs more elements than its storage")
    zip_with_pickle(root / "zip_nested.pt", nested_key_pickle())
    add("zip_nested_tuple_key", root / "zip_nested.pt", "levels deep")
    zip_with_pickle(root / "zip_record_lie.pt", storage_pid_pickle(2**31 - 1), {"0": b"\0" * 16})
    add("zip_storage_size_lie", root / "zip_record_lie.pt", "declares 2,147,483,647 elements")
    zip_with_pickle(root / "zip_os_system.pt", pickle.dumps(Reduce(__import__("os").system, "true"), 2))
    add("zip_os_system", root / "zip_os_system.pt", "posix.system")
    zip_with_pickle(root / "zip_big_view.pt", storage_pid_pickle(4, size=(1 << 20, 1 << 20)), {"0": b"\0" * 16})
    add("zip_view_larger_than_storage", root / "zip_big_view.pt", "needs more elements than its storage")
    add("legacy_header_lie", legacy_storage_lie(root / "legacy_lie.pt", 1 << 40, 1 << 40, b"\0" * 4), "declares")
    add("legacy_truncated_data", legacy_storage_lie(root / "legacy_cut.pt", 1000, 1000, b"\0" * 8), "declares")
    state = save_tiny_checkpoint("b", root / "base.pt")
    for name, edit, expect in (
        ("ros_nan", lambda s: s["convs.0.conv.weight"].view(-1).__setitem__(0, float("nan")), "NaN"),
        ("ros_inf_noise", lambda s: s.__setitem__("noises.noise_0", torch.full((1, 1, 4, 4), float("inf"))), "NaN"),
        ("ros_style_dim_4096", lambda s: s.__setitem__("style.1.weight", torch.zeros(16, 4096)), "shape mismatches"),
        ("ros_21_blocks", lambda s: s.update({f"to_rgbs.{k}.conv.weight": torch.zeros(1) for k in range(21)}),
         "size 8192 is outside"),
        ("ros_missing_key", lambda s: s.pop("convs.1.noise.weight"), "missing keys"),
        ("ros_scalar_style", lambda s: s.__setitem__("style.1.weight", torch.zeros(())), "no 2-d tensor"),
    ):
        variant = {k: v.clone() for k, v in state.items()}
        edit(variant)
        torch.save({"g_ema": variant}, root / f"{name}.pt")
        add(name, root / f"{name}.pt", expect)

    # DCGAN folders (card.json sizes) ----------------------------------------------------------------
    for name, arch, expect in (
        ("dcgan_nz_1e9", {**TINY_DCGAN, "nz": 10**9}, "nz 1000000000 is not an integer in"),
        ("dcgan_resolution_2e20", {**TINY_DCGAN, "resolution": 2**20}, "resolution 1048576"),
        ("dcgan_max_sizes_tiny_file", {"nz": 4096, "ngf": 64, "resolution": 1024, "channels": 3}, "shape mismatches"),
        ("dcgan_ngf_mismatch", {**TINY_DCGAN, "ngf": 8}, "shape mismatches"),
        ("dcgan_bool_nz", {**TINY_DCGAN, "nz": True}, "nz True"),
    ):
        add(name, dcgan_folder(root / name, arch), expect, spec="dcgan-file")
    add("dcgan_card_nested", dcgan_folder(root / "dcgan_nested", TINY_DCGAN, card_text="[" * 100_000 + "]" * 100_000),
        "levels deep", spec="dcgan-file")
    add("dcgan_card_5MB", dcgan_folder(root / "dcgan_big", TINY_DCGAN, card_text=" " * (5 << 20) + "{}"),
        "larger than", spec="dcgan-file")
    add("dcgan_card_list", dcgan_folder(root / "dcgan_list", TINY_DCGAN, card_text="[1, 2]"), "not an object",
        spec="dcgan-file")
    from pulse_engine.generators.dcgan import tiny_dcgan
    nan_state = dict(tiny_dcgan().state_dict())
    nan_state["main.0.weight"] = nan_state["main.0.weight"] * float("nan")
    add("dcgan_nan", dcgan_folder(root / "dcgan_nan", TINY_DCGAN, nan_state), "NaN", spec="dcgan-file")
    negative = dict(tiny_dcgan().state_dict())
    negative["main.1.running_var"] = -negative["main.1.running_var"] - 1
    add("dcgan_negative_variance", dcgan_folder(root / "dcgan_negvar", TINY_DCGAN, negative), "non-finite",
        spec="dcgan-file")

    # shifted: member cards, and the registry's listing of generator folders --------------------------
    add("shifted_card_list", shifted_folder(root / "shifted_list", card_text="[1, 2]"), "not an object",
        spec="shifted")
    add("shifted_base_self", shifted_folder(root / "shifted_self", base="shifted:."), "is itself a shifted",
        spec="shifted")
    add("shifted_base_chain", shifted_folder(root / "shifted_chain", base="shifted:../shifted_self"),
        "is itself a shifted", spec="shifted")
    add("shifted_card_40_deep", shifted_folder(root / "shifted_deep", notes=json.loads("[" * 40 + "]" * 40)),
        "more than 32 levels deep", spec="shifted")
    add("shifted_card_2MB", shifted_folder(root / "shifted_big", card_text=" " * (2 << 20) + "{}"), "larger than",
        spec="shifted")
    add("shifted_alpha_500KB", shifted_folder(root / "shifted_alpha", alpha="9" * 500_000), "alpha '9999",
        spec="shifted")
    add("shifted_alpha_huge_int", shifted_folder(root / "shifted_alpha_int", alpha=10**400), "a number within",
        spec="shifted")  # beyond float range: math.isfinite would raise OverflowError
    (root / "listing" / "deep").mkdir(parents=True)
    (root / "listing" / "deep" / "card.json").write_text("[" * 100_000 + "]" * 100_000)
    add("folders_nested_card", root / "listing", "levels deep", loader="folders")

    # StyleGAN1 folders ------------------------------------------------------------------------------
    add("sg1_nested_synthesis", stylegan1_folder(root / "sg1_nested", zip_with_pickle(
        root / "sg1.zip", nested_key_pickle()).read_bytes()), "nests objects", loader="stylegan1-tiny")
    add("sg1_pulse_fit_nan", stylegan1_folder(root / "sg1_fit_nan", pulse_fit={
        "mean": torch.zeros(16), "std": torch.full((16,), float("nan"))}), "NaN", loader="stylegan1-tiny")
    add("sg1_pulse_fit_planted", stylegan1_folder(root / "sg1_fit_planted", pulse_fit={
        "mean": torch.full((16,), 3.0), "std": torch.full((16,), 0.1)}), "does not describe", loader="stylegan1-tiny")
    return [dict(name=n, loader=loader, target=t, expect=e) for n, loader, t, e in cases]


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    cases = build_corpus(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    spec, out = root.parent / "cases.json", root.parent / "results.json"
    spec.write_text(json.dumps(cases))
    run = subprocess.run([sys.executable, "-c", SERVER, str(spec), str(out), str(EXTRA_MEMORY), str(CASE_CPU_SECONDS),
                          str(HANG_SECONDS)], capture_output=True, text=True, timeout=HANG_SECONDS * len(cases),
                         check=False,
                         env={**__import__("os").environ, "PULSE_AUDIT_FIT_SAMPLES": "200"})
    assert run.returncode == 0, run.stderr[-3000:]
    after = sorted(p.relative_to(root) for p in root.rglob("*"))
    results = {r["name"]: r for r in json.loads(out.read_text())}
    return cases, results, before, after


def test_every_hostile_file_is_refused_with_one_bounded_line(corpus_results):
    cases, results, _, _ = corpus_results
    assert len(cases) >= 50 and set(results) == {c["name"] for c in cases}
    failures = []
    for case in cases:
        got = results[case["name"]]
        line = got.get("message", "")
        ok = (got["kind"] == "error" and got["status"] == 0 and "\n" not in line and len(line) <= MAX_MESSAGE
              and case["expect"] in line and got["peak_growth_mb"] < MAX_PEAK_GROWTH_MB
              and not any(word in line for word in ("MemoryError", "allocate", "Traceback")))
        if not ok:
            failures.append(f"{case['name']}: kind={got['kind']} status={got['status']} "
                            f"peak+{got['peak_growth_mb']:.0f}MB message={line[:300]!r}")
    assert not failures, "\n".join(failures)


def test_no_hostile_file_writes_anything_beside_the_weights(corpus_results):
    _, _, before, after = corpus_results
    assert after == before  # no PWNED marker, no fit cache, no temporary file


# --- planted Gaussian-fit caches (a loaded model, so in-process) ------------------------------------

@pytest.mark.parametrize("plant", ["nan_std", "negative_std", "wrong_shape", "shifted_mean", "other_weights"])
def test_planted_fit_cache_is_recomputed_not_trusted(tmp_path, plant, caplog):
    weights = tmp_path / "g.pt"
    save_tiny_checkpoint("b", weights)
    honest = load_stylegan2(weights, "cpu", fit_samples=400)
    cache = fit_cache_path(weights)
    blob = torch.load(cache, weights_only=True)
    mean, std = blob["mean"], blob["std"]
    blob.update({"nan_std": {"std": std * float("nan")}, "negative_std": {"std": -std},
                 "wrong_shape": {"mean": torch.zeros(17)}, "shifted_mean": {"mean": mean + 3 * std},
                 "other_weights": {"source": "0" * 64}}[plant])
    torch.save(blob, cache)
    with caplog.at_level("WARNING"):
        again = load_stylegan2(weights, "cpu", fit_samples=400)
    assert torch.equal(again.fit_mean, honest.fit_mean) and torch.equal(again.fit_std, honest.fit_std)
    if plant != "other_weights":
        assert "recomputing the Gaussian-fit cache" in caplog.text
    expected = compute_fit(honest.mapping, honest.style_dim, 400)
    assert torch.equal(torch.load(cache, weights_only=True)["mean"], expected.mean)


def test_listing_generator_folders_names_an_unusable_card_and_goes_on(tmp_path):
    """``doctor`` and ``pulse-audit generators`` list folders: a card that cannot be read (here a directory named
    card.json, and a nested one) is named in one line each, and the usable folders are still listed."""
    good = shifted_folder(tmp_path / "good")
    (tmp_path / "dir" / "card.json").mkdir(parents=True)
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "card.json").write_text("[" * 100 + "]" * 100)
    unusable: list[str] = []
    assert folder_generators(tmp_path, unusable) == [f"shifted:{good}"]
    assert len(unusable) == 2 and all("\n" not in line and len(line) < 300 for line in unusable)
    with pytest.raises(WeightsError):
        folder_generators(tmp_path)  # a loader's listing still refuses
