"""llama-cpp-python's OpenAI-compatible server with Gemma 3's own chat template (`make demo-llm`,
`make test-llm`, the real-model judge bench).

Run by the model server's venv, not ours: `<LLM_DIR>/venv/bin/python -I llm_server.py <server
arguments> --chat_format gemma3`. It registers the chat format "gemma3" and runs
`llama_cpp.server`. Why: the GGUF carries no chat template, and llama-cpp-python's built-in
"gemma" format drops every system message (it logs "system messages are not allowed" at debug
level and formats the rest), so a judge would never see its rubric, which the judge scorer sends
as the system message. Gemma 3's template (Google's chat_template.jinja) puts the system text,
then a blank line, at the start of the first user turn; `gemma3_prompt` does the same.

Imports nothing of MedBench and llama_cpp only in `main`, so the formatter is testable anywhere.
"""

from __future__ import annotations

from typing import Any

CHAT_FORMAT = "gemma3"
TURN_END = "<end_of_turn>\n"


def _text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def gemma3_prompt(messages: list[dict[str, Any]]) -> str:
    """The prompt Gemma 3's chat template makes of OpenAI chat messages, generation prompt
    included (the tokenizer adds <bos>). Leading system messages become the first user turn's
    prefix; assistant turns are "model" turns."""
    system, rest = [], list(messages)
    while rest and rest[0].get("role") == "system":
        system.append(_text(rest.pop(0).get("content")))
    prefix = "\n\n".join(system) + "\n\n" if system else ""
    prompt = ""
    for i, message in enumerate(rest):
        role = "model" if message.get("role") == "assistant" else str(message.get("role"))
        if role == "system":  # a system message later on: shown as a user turn
            role = "user"
        head = prefix if i == 0 else ""
        prompt += f"<start_of_turn>{role}\n{head}{_text(message.get('content'))}{TURN_END}"
    if not rest and prefix:
        prompt += f"<start_of_turn>user\n{prefix}{TURN_END}"
    return prompt + "<start_of_turn>model\n"


def main() -> None:
    from llama_cpp import llama_chat_format
    from llama_cpp.server.__main__ import main as serve

    @llama_chat_format.register_chat_format(CHAT_FORMAT)  # type: ignore[misc]
    def format_gemma3(
        messages: list[dict[str, Any]], **kwargs: Any
    ) -> llama_chat_format.ChatFormatterResponse:
        return llama_chat_format.ChatFormatterResponse(
            prompt=gemma3_prompt(messages), stop=TURN_END
        )

    serve()


if __name__ == "__main__":
    main()
