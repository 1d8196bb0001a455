"""The agent runtime and the synthesis stage.

Sub-packages: `synth.tools` (the tools the agent calls), `synth.runtime` (the agent loop, the
protocol and its profiles, chat policies and endpoints), `synth.scoring` (judges and the reward).
Stage modules at this level: `stage` (teacher synthesis), `probe` (student probes), `long_cot`,
`trajectory` (the `Trajectory` schema), `sharegpt` (the importer), `replay` (the offline server)."""
