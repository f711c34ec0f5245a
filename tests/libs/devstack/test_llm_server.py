"""The model server's chat template: Gemma 3's own, the system message (the judge's rubric) kept
as the first user turn's prefix (llama-cpp-python's built-in "gemma" format drops it)."""

from __future__ import annotations

from medbench_devstack.llm_server import gemma3_prompt


def test_the_rubric_reaches_the_model_as_gemma_3_shows_it() -> None:
    messages = [
        {"role": "system", "content": "RUBRIC: score 0-10"},
        {"role": "user", "content": "ANSWER 1"},
        {"role": "assistant", "content": "not json"},
        {"role": "user", "content": [{"type": "text", "text": "again"}]},
    ]
    assert gemma3_prompt(messages) == (
        "<start_of_turn>user\nRUBRIC: score 0-10\n\nANSWER 1<end_of_turn>\n"
        "<start_of_turn>model\nnot json<end_of_turn>\n"
        "<start_of_turn>user\nagain<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_without_a_system_message_it_is_the_plain_gemma_format() -> None:
    assert gemma3_prompt([{"role": "user", "content": "你好"}]) == (
        "<start_of_turn>user\n你好<end_of_turn>\n<start_of_turn>model\n"
    )
    assert gemma3_prompt([{"role": "system", "content": "S"}]) == (
        "<start_of_turn>user\nS\n\n<end_of_turn>\n<start_of_turn>model\n"
    )
