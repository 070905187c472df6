// QCOW2 support: header inspection, Scaleway import checks, raw <-> QCOW2 conversion.
export {
  parseQcow2Header,
  readQcow2Info,
  scalewayImportProblem,
  Qcow2FormatError,
  Qcow2TruncatedError,
  type Qcow2Info,
  type Qcow2Header,
} from './header.js';
export { rawToQcow2Stream, rawToQcow2File } from './writer.js';
export { qcow2ToRawFile, qcow2ReadProblem } from './reader.js';
