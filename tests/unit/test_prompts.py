from __future__ import annotations

from pathlib import Path

import pytest

from qa_service.generation.prompts import PromptError, check_default, load_prompt, load_prompts

REPO_PROMPTS = Path(__file__).resolve().parents[2] / "prompts"


def test_default_prompt_keeps_the_classic_wording() -> None:
    prompts = load_prompts(REPO_PROMPTS)
    messages = prompts["explain"].template.format_messages(concept="photosynthesis")
    assert messages[0].type == "system"
    assert messages[-1].type == "human"
    assert messages[-1].content == (
        "Use 100 words to explain the following knowledge point or introduce: photosynthesis"
    )


def test_every_shipped_prompt_loads_and_has_a_description() -> None:
    prompts = load_prompts(REPO_PROMPTS)
    assert {"explain", "eli5", "outline"} <= set(prompts)
    assert all(prompt.description for prompt in prompts.values())
    check_default(prompts, "explain")


@pytest.mark.parametrize("query", ["{concept}", "{{x}}", "{0}", "{", "}", "{a.b}", "%s {!r}"])
def test_a_query_is_only_ever_a_value(query: str) -> None:
    prompt = load_prompts(REPO_PROMPTS)["explain"]
    content = prompt.template.format_messages(concept=query)[-1].content
    assert isinstance(content, str)
    assert content.endswith(": " + query)


def test_literal_braces_in_a_template_are_written_doubled(tmp_path: Path) -> None:
    path = tmp_path / "json.toml"
    path.write_text('system = "Reply as {{\\"answer\\": ...}}"\nuser = "{concept}"\n')
    prompt = load_prompt(path)
    assert prompt.template.format_messages(concept="x")[0].content == 'Reply as {"answer": ...}'


@pytest.mark.parametrize(
    ("name", "content", "fault"),
    [
        ("a.toml", 'user = "{concept}"', "'system'"),
        ("a.toml", 'system = ""\nuser = "{concept}"', "'system'"),
        ("a.toml", 'system = "s"\nuser = 3', "'user'"),
        ("a.toml", 'system = "s"\nuser = "{topic}"', "topic"),
        ("a.toml", 'system = "s"\nuser = "{concept}"\ndescription = 1', "description"),
        ("Bad Name.toml", 'system = "s"\nuser = "{concept}"', "name must match"),
    ],
)
def test_broken_prompt_files_are_refused_with_the_file_named(
    tmp_path: Path, name: str, content: str, fault: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(PromptError) as caught:
        load_prompt(path)
    assert str(path) in str(caught.value)
    assert fault in str(caught.value)


def test_an_empty_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"no \*\.toml prompt files"):
        load_prompts(tmp_path)


def test_an_unknown_default_is_refused() -> None:
    with pytest.raises(PromptError, match="QA_DEFAULT_PROMPT"):
        check_default(load_prompts(REPO_PROMPTS), "nope")
