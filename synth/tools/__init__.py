"""The tools the agent calls: the sandboxed stateful Python kernel (`kernel`, run by the warm
`zygote` inside the bubblewrap `sandbox`; `kernel_worker`, `kernel_backend` and the channel's
`wire` format run inside it) and text and image search behind a persistent cache (`search`).

This file imports nothing: the zygote imports the package inside the sandbox."""
