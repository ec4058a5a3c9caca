"""Drives a running Switchyard node with the official `openai` package: plain answers unary and
streaming, tools (one call, parallel calls, streamed call deltas, the tool turn and the final
answer), structured output, image parts, embeddings, and batch jobs (files.create,
batches.create, batches.retrieve until done, files.content, batches.list).

Usage: python openai_interop.py BASE_URL EXPECTED_PREFIX
Exits non-zero with a message on the first mismatch.
"""

import json
import sys
import time

import openai

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def plain(client: openai.OpenAI, expected_prefix: str) -> None:
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


def check_weather_call(call) -> dict:
    assert call.type == "function", call
    assert call.function.name == "get_weather", call
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments.get("city"), str) and arguments.get("unit") == "celsius", arguments
    return arguments


def tools(client: openai.OpenAI, model: str) -> None:
    question = [{"role": "user", "content": f"what is the weather in Paris? ({model})"}]
    # One named tool, unary.
    completion = client.chat.completions.create(
        model=model, messages=question, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls", (model, choice)
    assert choice.message.content is None, choice.message
    assert len(choice.message.tool_calls) == 1, choice.message.tool_calls
    call = choice.message.tool_calls[0]
    check_weather_call(call)

    # The same, streamed: the deltas assemble into the same call.
    stream = client.chat.completions.create(
        model=model,
        messages=question,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    assembled, finish, fragments = {}, None, 0
    for chunk in stream:
        for piece in chunk.choices:
            for delta in piece.delta.tool_calls or []:
                entry = assembled.setdefault(delta.index, {"id": None, "name": None, "arguments": ""})
                if delta.id:
                    entry["id"] = delta.id
                if delta.function and delta.function.name:
                    entry["name"] = delta.function.name
                if delta.function and delta.function.arguments:
                    entry["arguments"] += delta.function.arguments
                    fragments += 1
            if piece.finish_reason:
                finish = piece.finish_reason
    assert finish == "tool_calls", finish
    assert list(assembled) == [0], assembled
    assert fragments >= 2, f"arguments arrived in {fragments} piece(s), not as they were produced"
    assert assembled[0]["name"] == "get_weather", assembled
    assert json.loads(assembled[0]["arguments"]) == json.loads(call.function.arguments), (assembled, call)

    # Two tools offered, parallel calls allowed: two calls in one answer.
    parallel = client.chat.completions.create(model=model, messages=question, tools=[WEATHER, TIME], tool_choice="required")
    calls = parallel.choices[0].message.tool_calls
    assert len(calls) == 2 and {c.function.name for c in calls} == {"get_weather", "get_time"}, calls
    single = client.chat.completions.create(
        model=model, messages=question, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False
    )
    assert len(single.choices[0].message.tool_calls) == 1, single.choices[0].message.tool_calls

    # The tool's result goes back; the model answers in words.
    follow_up = question + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    final = client.chat.completions.create(model=model, messages=follow_up, tools=[WEATHER])
    assert final.choices[0].finish_reason in ("stop", "length"), final.choices[0]
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls, final.choices[0].message


def structured(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "answer as JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}},
    )
    value = json.loads(completion.choices[0].message.content)
    assert set(value) == {"answer", "confidence"}, value
    assert isinstance(value["answer"], str) and isinstance(value["confidence"], (int, float)), value
    # json_object is refused by Anthropic providers, so a request naming an Anthropic model fails
    # over to one that honours it.
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku", messages=[{"role": "user", "content": "answer as JSON"}], response_format={"type": "json_object"}
    )
    assert raw.headers["x-switchyard-provider"] != "anthropic", dict(raw.headers)
    assert isinstance(json.loads(raw.parse().choices[0].message.content), dict)


def images(client: openai.OpenAI) -> None:
    for model in ("gpt-4o-mini", "claude-haiku"):
        completion = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": [{"type": "text", "text": "what is in this image?"}, {"type": "image_url", "image_url": {"url": PNG}}]}],
        )
        assert completion.choices[0].message.content, completion


def embeddings(client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; asked for floats, the node sends a list.
    texts = ["switch yard", "rail points"]
    packed = client.embeddings.create(model="text-embedding-3-small", input=texts)
    assert [item.index for item in packed.data] == [0, 1], packed.data
    assert len(packed.data[0].embedding) > 0 and packed.data[0].embedding != packed.data[1].embedding
    assert packed.usage.prompt_tokens == 4, packed.usage
    floats = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format="float")
    for a, b in zip(packed.data, floats.data):
        assert len(a.embedding) == len(b.embedding) and all(abs(x - y) < 1e-6 for x, y in zip(a.embedding, b.embedding)), (a, b)
    try:
        client.embeddings.create(model="gpt-4o-mini", input="x")
    except openai.BadRequestError as error:
        assert "gpt-4o-mini" in str(error), error
    else:
        raise AssertionError("a chat model embedded")


def batch_line(custom_id: str, content: str) -> str:
    body = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": content}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})


def batches(client: openai.OpenAI, expected_prefix: str) -> None:
    lines = [batch_line(f"q{index}", "interop check") for index in range(3)]
    uploaded = client.files.create(file=("questions.jsonl", "\n".join(lines).encode(), "application/jsonl"), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0, uploaded
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"suite": "interop"}
    )
    assert batch.metadata == {"suite": "interop"}, batch
    deadline = time.monotonic() + 60
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch}"
        time.sleep(0.05)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (3, 3, 0), batch
    assert batch.error_file_id is None, batch
    output = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(line["custom_id"] for line in output) == ["q0", "q1", "q2"], output
    for line in output:
        assert line["response"]["status_code"] == 200, line
        text = line["response"]["body"]["choices"][0]["message"]["content"]
        assert text.startswith(expected_prefix), f"batch answer {text!r} lacks {expected_prefix!r}"
    assert batch.id in [listed.id for listed in client.batches.list(limit=10).data]

    # A bad line fails the batch up front, naming the line; nothing runs.
    bad = client.files.create(file=("bad.jsonl", (lines[0] + "\n{oops").encode()), purpose="batch")
    failed = client.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert failed.status == "failed", failed
    assert [error.line for error in failed.errors.data] == [2], failed.errors
    try:
        client.batches.retrieve("batch_000000000000000000000000")
    except openai.NotFoundError:
        pass
    else:
        raise AssertionError("an unknown batch was found")


def main() -> None:
    base_url, expected_prefix = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    plain(client, expected_prefix)
    for model in ("gpt-4o-mini", "claude-haiku"):
        tools(client, model)
    structured(client)
    images(client)
    embeddings(client)
    batches(client, expected_prefix)
    print("openai interop ok")


if __name__ == "__main__":
    main()
