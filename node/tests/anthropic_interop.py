"""Drives a running Switchyard node with the official `anthropic` package, through to an
Anthropic-kind provider and to an OpenAI-kind one: messages unary and streaming, tools (a call,
the tool result, the final answer; streamed input_json_delta), images, token counting, errors.

Usage: python anthropic_interop.py BASE_URL EXPECTED_PREFIX
Exits non-zero with a message on the first mismatch.
"""

import sys

import anthropic

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
TIME = {"name": "get_time", "input_schema": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def plain(client: anthropic.Anthropic, model: str, expected_prefix: str) -> None:
    question = [{"role": "user", "content": "interop check"}]
    message = client.messages.create(model=model, max_tokens=8, messages=question)
    assert message.type == "message" and message.role == "assistant", message
    assert message.model == model, message.model
    text = "".join(block.text for block in message.content if block.type == "text")
    assert text.startswith(expected_prefix), f"{model}: unary answer {text!r} lacks {expected_prefix!r}"
    assert message.stop_reason == "max_tokens", message.stop_reason
    assert message.usage.output_tokens == 8 and message.usage.input_tokens == 2, message.usage

    with client.messages.stream(model=model, max_tokens=1024, messages=question) as stream:
        pieces = [text for text in stream.text_stream]
        final = stream.get_final_message()
    streamed = "".join(pieces)
    assert streamed.startswith(expected_prefix), f"{model}: streamed answer {streamed!r} lacks {expected_prefix!r}"
    assert len(pieces) > 1, f"{model}: the answer arrived in one piece"
    assert final.stop_reason == "end_turn", final.stop_reason
    assert final.usage.output_tokens == 16, final.usage


def tools(client: anthropic.Anthropic, model: str) -> None:
    question = [{"role": "user", "content": f"what is the weather in Paris? ({model})"}]
    message = client.messages.create(
        model=model, max_tokens=256, messages=question, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    )
    assert message.stop_reason == "tool_use", (model, message)
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather", message.content
    assert uses[0].input.get("unit") == "celsius" and isinstance(uses[0].input.get("city"), str), uses[0].input

    with client.messages.stream(
        model=model, max_tokens=256, messages=question, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}
    ) as stream:
        json_deltas = sum(1 for event in stream if event.type == "content_block_delta" and event.delta.type == "input_json_delta")
        final = stream.get_final_message()
    assert json_deltas >= 2, f"{model}: arguments arrived in {json_deltas} piece(s)"
    streamed_uses = [block for block in final.content if block.type == "tool_use"]
    assert final.stop_reason == "tool_use" and len(streamed_uses) == 1, final
    assert streamed_uses[0].input == uses[0].input, (streamed_uses[0].input, uses[0].input)

    parallel = client.messages.create(model=model, max_tokens=256, messages=question, tools=[WEATHER, TIME], tool_choice={"type": "any"})
    assert {block.name for block in parallel.content if block.type == "tool_use"} == {"get_weather", "get_time"}, parallel.content
    single = client.messages.create(
        model=model, max_tokens=256, messages=question, tools=[WEATHER, TIME], tool_choice={"type": "any", "disable_parallel_tool_use": True}
    )
    assert len([block for block in single.content if block.type == "tool_use"]) == 1, single.content

    follow_up = question + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 degrees and sunny"}]},
    ]
    answer = client.messages.create(model=model, max_tokens=256, messages=follow_up, tools=[WEATHER])
    assert answer.stop_reason in ("end_turn", "max_tokens"), answer
    assert [block.type for block in answer.content] == ["text"] and answer.content[0].text, answer.content


def images(client: anthropic.Anthropic, model: str) -> None:
    content = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "text", "text": "what is in this image?"},
    ]
    message = client.messages.create(model=model, max_tokens=64, messages=[{"role": "user", "content": content}])
    assert message.content[0].text, message


def counting(client: anthropic.Anthropic) -> None:
    question = [{"role": "user", "content": "how many tokens is this question"}]
    counted = client.messages.count_tokens(model="claude-haiku", messages=question, system="be brief")
    message = client.messages.create(model="claude-haiku", max_tokens=8, messages=question, system="be brief")
    assert counted.input_tokens == message.usage.input_tokens, (counted, message.usage)
    try:
        client.messages.count_tokens(model="gpt-4o-mini", messages=question)
    except anthropic.BadRequestError as error:
        assert "gpt-4o-mini" in str(error) and "count" in str(error), error
    else:
        raise AssertionError("an OpenAI model counted tokens")


def errors(client: anthropic.Anthropic) -> None:
    try:
        client.messages.create(model="claude-haiku", max_tokens=8, messages=[{"role": "user", "content": "x"}], temperature=1.5)
    except anthropic.BadRequestError as error:
        assert error.body["error"]["type"] == "invalid_request_error" and "temperature" in str(error), error.body
    else:
        raise AssertionError("temperature 1.5 was accepted")
    try:
        client.messages.create(model="claude-7", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    except anthropic.BadRequestError as error:
        assert "claude-7" in str(error), error
    else:
        raise AssertionError("an unknown model was accepted")


def main() -> None:
    base_url, expected_prefix = sys.argv[1], sys.argv[2]
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)
    for model in ("claude-haiku", "gpt-4o-mini"):
        plain(client, model, expected_prefix)
        tools(client, model)
        images(client, model)
    counting(client)
    errors(client)
    ids = [model.id for model in client.models.list()]
    assert "claude-haiku" in ids and "gpt-4o-mini" in ids and "claude-opus-4" not in ids, ids
    print("anthropic interop ok")


if __name__ == "__main__":
    main()
