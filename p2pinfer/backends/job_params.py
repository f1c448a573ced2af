"""A signed job's parameters as the backend's `SamplingParams`: one mapping for the
job server (jobs/generation.py) and the re-check (verify/judge.py)."""

from __future__ import annotations

from p2pinfer.backends.base import SamplingParams
from p2pinfer.protocol.messages import JobRequest


def sampling_params(request: JobRequest) -> SamplingParams:
    """The backend's sampling parameters for a request."""
    p = request.params
    return SamplingParams(
        max_tokens=p.max_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k,
        seed=p.seed,
        stop=tuple(p.stop),
        min_p=0.0 if p.min_p is None else p.min_p,
        repeat_penalty=1.0 if p.repeat_penalty is None else p.repeat_penalty,
        presence_penalty=0.0 if p.presence_penalty is None else p.presence_penalty,
        frequency_penalty=0.0 if p.frequency_penalty is None else p.frequency_penalty,
        output_format=p.output_format,
        top_logprobs=p.top_logprobs,
        tools=p.tools,
        tool_choice=p.tool_choice,
    )
