// The unmodified ollama-js client, as an app written for Ollama uses it. Prints one JSON
// object with what it got; tests/agent/test_agent_ollama_js.py checks it.
//   node client.mjs '{"host": "http://127.0.0.1:7001", "key": "...", "model": "qwen3:0.6b"}'
import { Ollama } from 'ollama'

const { host, key, model } = JSON.parse(process.argv[2])
const ollama = new Ollama({ host, headers: { Authorization: `Bearer ${key}` } })
const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' }, days: { type: 'integer' } },
      required: ['city'],
    },
  },
}
const ask = { role: 'user', content: 'call get_weather with {"city": "Paris", "days": 2}' }
const out = {}

out.version = (await ollama.version()).version
out.listed = (await ollama.list()).models.map((m) => m.model)
const shown = await ollama.show({ model })
out.capabilities = shown.capabilities
out.context_length = Object.entries(shown.model_info)
  .filter(([k]) => k.endsWith('.context_length'))
  .map(([, v]) => v)

// streamed tool calls, then the tool loop's second turn
const calls = []
let assistant = { role: 'assistant', content: '' }
for await (const part of await ollama.chat({ model, messages: [ask], tools: [weather], stream: true })) {
  for (const call of part.message.tool_calls ?? []) calls.push(call)
  if (part.done) out.done_reason = part.done_reason
}
out.calls = calls.map((c) => [c.function.name, c.function.arguments])
assistant.tool_calls = calls
const second = await ollama.chat({
  model,
  messages: [ask, assistant, { role: 'tool', content: '18 degrees', tool_name: 'get_weather' }],
  tools: [weather],
})
out.second = second.message.content

const thought = await ollama.chat({ model, messages: [{ role: 'user', content: 'why' }], think: true })
out.thinking = thought.message.thinking
out.content = thought.message.content
console.log(JSON.stringify(out))
