"""Drives a running Switchyard node with the official `openai` package, unary and streaming.

Usage: python openai_interop.py BASE_URL EXPECTED_PREFIX
Exits non-zero with a message on the first mismatch.
"""

import sys

import openai


def main() -> None:
    base_url, expected_prefix = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "interop check"}],
        max_tokens=8,
    )
    text = completion.choices[0].message.content
    assert text.startswith(expected_prefix), f"unary answer {text!r} lacks {expected_prefix!r}"
    assert completion.model == "gpt-4o-mini", completion.model
    assert completion.usage.completion_tokens == 8, completion.usage
    assert completion.choices[0].finish_reason == "length", completion.choices[0].finish_reason

    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku", messages=[{"role": "user", "content": "interop check"}]
    )
    assert raw.headers["x-switchyard-provider"] == "anthropic", dict(raw.headers)

    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "interop check"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    streamed = "".join(pieces)
    assert streamed.startswith(expected_prefix), f"streamed answer {streamed!r} lacks {expected_prefix!r}"
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens == 16, usage

    try:
        client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "x"}])
    except openai.BadRequestError as error:
        assert "gpt-17" in str(error), error
    else:
        raise AssertionError("an unknown model was accepted")

    print("openai interop ok")


if __name__ == "__main__":
    main()
