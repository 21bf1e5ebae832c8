// A TF.js graph model run in Node by @tensorflow/tfjs (its CPU backend), nothing else: what a Node or browser
// deployment runs. Started by porter/verifiers/runners/tfjs_node.py as `node tfjs_node.js MODEL_DIR NODE_MODULES`.
//
// Protocol (one JSON object per line on stdout; everything a library prints goes to stderr):
//   child -> parent at start: {"inputs": {name: {"dtype", "shape"}}, "outputs": [...], "runtime": "..."}
//   parent -> child: {"in": manifest.json, "out": folder}; the manifest maps input name -> {"dtype", "shape", "file"}
//     (raw little-endian bytes); the child writes out/NAME.bin per output and answers
//     {"ok": true, "outputs": {name: {"dtype", "shape", "file"}}} or {"error": "..."}
//   parent closes stdin; child -> parent: {"done": true}
// No network and no file outside MODEL_DIR and the request's own files are touched.
'use strict';

const fs = require('fs');
const path = require('path');
const readline = require('readline');

const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
console.log = console.error;  // keep the protocol's stdout clean
console.info = console.error;

const [modelDir, nodeModules] = process.argv.slice(2);
const need = (name) => require(path.join(nodeModules, ...name.split('/')));
const tf = need('@tensorflow/tfjs-core');
need('@tensorflow/tfjs-backend-cpu');
const tfconv = need('@tensorflow/tfjs-converter');
const version = require(path.join(nodeModules, '@tensorflow', 'tfjs-core', 'package.json')).version;

const DTYPES = {DT_FLOAT: 'float32', DT_INT32: 'int32', DT_INT64: 'int32', DT_BOOL: 'bool'};  // TF.js has no int64
const ARRAYS = {float32: Float32Array, int32: Int32Array, bool: Uint8Array};

function fileHandler(dir) {
  // tf.io's file:// handler lives in tfjs-node (a native binary that cannot install offline); this reads the
  // model.json and its weight shards from disk as tf.io.fromMemory would take them
  return {
    load: async () => {
      const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
      const specs = [], buffers = [];
      for (const group of json.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(buffers);
      return {
        modelTopology: json.modelTopology, weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
        format: json.format, generatedBy: json.generatedBy, convertedBy: json.convertedBy,
        signature: json.signature, userDefinedMetadata: json.userDefinedMetadata,
        modelInitializer: json.modelInitializer,
      };
    },
  };
}

const plain = (name) => name.replace(/:0$/, '');

async function main() {
  await tf.setBackend('cpu');
  const model = await tfconv.loadGraphModel(fileHandler(modelDir));
  const signature = model.signature || {inputs: {}, outputs: {}};
  const inputs = {}, outputs = {};
  for (const [key, info] of Object.entries(signature.inputs)) {
    inputs[plain(key)] = {tensor: info.name, dtype: DTYPES[info.dtype] || info.dtype,
                          shape: ((info.tensorShape || {}).dim || []).map((d) => Number(d.size))};
  }
  for (const [key, info] of Object.entries(signature.outputs)) outputs[plain(key)] = info.name;
  reply({inputs: Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, {dtype: v.dtype, shape: v.shape}])),
         outputs: Object.keys(outputs), runtime: `@tensorflow/tfjs ${version} (${tf.getBackend()} backend, Node ${process.version})`});

  const rl = readline.createInterface({input: process.stdin, terminal: false});
  for await (const line of rl) {
    if (!line.trim()) continue;
    const request = JSON.parse(line);
    const made = [];
    try {
      const manifest = JSON.parse(fs.readFileSync(request.in, 'utf8'));
      const feed = {};
      for (const [name, spec] of Object.entries(manifest)) {
        if (!(name in inputs)) throw new Error(`the model has no input ${name} (its inputs: ${Object.keys(inputs)})`);
        const bytes = fs.readFileSync(spec.file);
        const Array_ = ARRAYS[spec.dtype];
        const values = new Array_(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
        const t = tf.tensor(values, spec.shape, spec.dtype);
        made.push(t);
        feed[inputs[name].tensor] = t;
      }
      const names = Object.keys(outputs);
      let result = await model.executeAsync(feed, names.map((n) => outputs[n]));
      if (!Array.isArray(result)) result = [result];
      made.push(...result);
      const written = {};
      for (let i = 0; i < names.length; i++) {
        const t = result[i];
        const data = await t.data();
        const file = path.join(request.out, `${names[i]}.bin`);
        fs.writeFileSync(file, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        written[names[i]] = {dtype: t.dtype, shape: t.shape, file};
      }
      reply({ok: true, outputs: written});
    } catch (err) {
      reply({error: String(err && err.message ? err.message : err)});
    } finally {
      tf.dispose(made);
    }
  }
  reply({done: true});
}

main().catch((err) => {
  process.stderr.write(`tfjs_node: ${err && err.stack ? err.stack : err}\n`);
  process.exit(3);
});
