// The few ONNX protobuf fields a client needs, read and rewritten by hand: which tensors a graph
// keeps in external data (to confine and verify those files), and the graph with those tensors
// put back inline, so that one buffer of verified bytes is all ONNX Runtime gets (onnxruntime-node
// has no in-memory external data; onnxruntime-web has, but one path for both is easier to trust).
// Field numbers from onnx.proto (stable since IR version 3).

const MODEL_GRAPH = 7, MODEL_FUNCTIONS = 25, FUNCTION_NODE = 7;
const GRAPH_NODE = 1, GRAPH_INITIALIZER = 5, GRAPH_SPARSE_INITIALIZER = 15;
const NODE_ATTRIBUTE = 5;
const ATTR_T = 5, ATTR_G = 6, ATTR_TENSORS = 10, ATTR_GRAPHS = 11, ATTR_SPARSE_TENSOR = 22, ATTR_SPARSE_TENSORS = 23;
const TENSOR_RAW_DATA = 9, TENSOR_NAME = 8, TENSOR_EXTERNAL_DATA = 13, TENSOR_DATA_LOCATION = 14;
const SPARSE_VALUES = 1, SPARSE_INDICES = 2;
const ENTRY_KEY = 1, ENTRY_VALUE = 2;

export class GraphFormatError extends Error {}

function varint(buf, pos) {
  let value = 0, scale = 1;
  for (;;) {
    if (pos >= buf.length || scale > 2 ** 63) throw new GraphFormatError('truncated or malformed varint');
    const byte = buf[pos++];
    value += (byte & 0x7f) * scale;  // arithmetic, not bit shifts: lengths may pass 2^31
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
}

/** Each field of a message: {number, wire, start, end, payload (length-delimited only)}. */
function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    let key;
    [key, pos] = varint(buf, pos);
    const number = Math.floor(key / 8), wire = key % 8;
    let payload = null;
    if (wire === 0) [, pos] = varint(buf, pos);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let size;
      [size, pos] = varint(buf, pos);
      if (pos + size > buf.length) throw new GraphFormatError('a field runs past the end of the message');
      payload = buf.subarray(pos, pos + size);
      pos += size;
    } else throw new GraphFormatError(`unsupported protobuf wire type ${wire}`);
    if (pos > buf.length) throw new GraphFormatError('a field runs past the end of the message');
    yield { number, wire, start, end: pos, payload };
  }
}

const text = (bytes) => new TextDecoder().decode(bytes);

/** A tensor's name and its external_data entries ({location, offset, length}), or null. */
function tensorExternal(buf) {
  let name = '', entries = null;
  for (const f of fields(buf)) {
    if (f.number === TENSOR_NAME) name = text(f.payload);
    else if (f.number === TENSOR_EXTERNAL_DATA) {
      const entry = {};
      for (const e of fields(f.payload)) entry[e.number] = text(e.payload);
      (entries ||= {})[entry[ENTRY_KEY]] = entry[ENTRY_VALUE];
    }
  }
  return entries && { name, ...entries };
}

function walkGraph(buf, found, depth) {
  for (const f of fields(buf)) {
    if (f.number === GRAPH_NODE) walkNode(f.payload, found, depth);
    else if (f.number === GRAPH_INITIALIZER) addTensor(f.payload, found, depth);
    else if (f.number === GRAPH_SPARSE_INITIALIZER) walkSparse(f.payload, found, depth + 1);
  }
}

function walkNode(buf, found, depth) {
  for (const f of fields(buf)) {
    if (f.number !== NODE_ATTRIBUTE) continue;
    for (const a of fields(f.payload)) {
      if (a.number === ATTR_T || a.number === ATTR_TENSORS) addTensor(a.payload, found, depth + 1);
      else if (a.number === ATTR_G || a.number === ATTR_GRAPHS) walkGraph(a.payload, found, depth + 1);
      else if (a.number === ATTR_SPARSE_TENSOR || a.number === ATTR_SPARSE_TENSORS) walkSparse(a.payload, found, depth + 1);
    }
  }
}

function walkSparse(buf, found, depth) {
  for (const f of fields(buf)) if (f.number === SPARSE_VALUES || f.number === SPARSE_INDICES) addTensor(f.payload, found, depth);
}

function addTensor(buf, found, depth) {
  const t = tensorExternal(buf);
  if (t) found.push({ ...t, inSubgraph: depth > 0 });
}

/** Every tensor of a serialized model kept in external data: {name, location, offset, length, inSubgraph}. */
export function externalTensors(model) {
  const found = [];
  for (const f of fields(model)) {
    if (f.number === MODEL_GRAPH) walkGraph(f.payload, found, 0);
    else if (f.number === MODEL_FUNCTIONS) {
      for (const g of fields(f.payload)) if (g.number === FUNCTION_NODE) walkNode(g.payload, found, 1);
    }
  }
  return found;
}

function encodeVarint(value) {
  const out = [];
  while (value >= 0x80) { out.push((value % 128) | 0x80); value = Math.floor(value / 128); }
  out.push(value);
  return Uint8Array.from(out);
}

/** A length-delimited field: key, length, then the parts. */
function lengthDelimited(number, parts) {
  const size = parts.reduce((n, p) => n + p.length, 0);
  return [encodeVarint(number * 8 + 2), encodeVarint(size), ...parts];
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) { out.set(p, pos); pos += p.length; }
  return out;
}

/**
 * The model with every main-graph initializer's external data put inline as raw_data.
 * `files` maps an external-data location to that file's (verified) bytes.
 */
export function inlineExternalData(model, files) {
  const modelParts = [];
  for (const f of fields(model)) {
    if (f.number !== MODEL_GRAPH) { modelParts.push(model.subarray(f.start, f.end)); continue; }
    const graphParts = [];
    for (const g of fields(f.payload)) {
      const t = g.number === GRAPH_INITIALIZER ? tensorExternal(g.payload) : null;
      if (!t) { graphParts.push(f.payload.subarray(g.start, g.end)); continue; }
      const data = files[t.location];
      const offset = Number(t.offset || 0), length = Number(t.length);
      if (!data || !Number.isSafeInteger(length) || offset + length > data.length) {
        throw new GraphFormatError(`tensor '${t.name}': external data ${t.location} [${offset}, +${t.length}) is not in the file`);
      }
      const kept = [];
      for (const tf of fields(g.payload)) {
        if (tf.number !== TENSOR_EXTERNAL_DATA && tf.number !== TENSOR_DATA_LOCATION) kept.push(g.payload.subarray(tf.start, tf.end));
      }
      kept.push(...lengthDelimited(TENSOR_RAW_DATA, [data.subarray(offset, offset + length)]));
      graphParts.push(...lengthDelimited(GRAPH_INITIALIZER, kept));
    }
    modelParts.push(...lengthDelimited(MODEL_GRAPH, graphParts));
  }
  return concat(modelParts);
}
