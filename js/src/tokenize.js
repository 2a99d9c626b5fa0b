// Raw English text to tokens, exactly as the Python runtime splits it (elmo_runtime/tokenize.py:
// Moses / 1B Word Benchmark conventions, one regex run over the whole text). This is that module's
// pattern, alternative by alternative, in JavaScript's regex dialect (the `u` flag): Oniguruma's
// `\x{...}` becomes `\u{...}`, `\z` becomes `$`, and `(?i:...)` (which Node 20 lacks) becomes
// explicit case classes, with `ſ` because Unicode case folding maps it to `s`. Every package's
// conformance.json lists texts with their tokens; `verify` checks this module against them.

// Moses' nonbreaking_prefix.en (A-Z added in the pattern) plus "Jr"; case-sensitive.
export const NONBREAKING_PREFIXES = [
  'Adj', 'Adm', 'Adv', 'Apr', 'Asst', 'Aug', 'Bart', 'Bldg', 'Brig', 'Bros', 'Capt', 'Cmdr',
  'Col', 'Comdr', 'Con', 'Corp', 'Cpl', 'DR', 'Dec', 'Dr', 'Drs', 'Ens', 'Feb', 'Gen', 'Gov',
  'Hon', 'Hosp', 'Hr', 'Insp', 'Jan', 'Jr', 'Jul', 'Jun', 'Lt', 'MM', 'MR', 'MRS', 'MS',
  'Maj', 'Mar', 'Messrs', 'Mlle', 'Mme', 'Mr', 'Mrs', 'Ms', 'Msgr', 'Nos', 'Nov', 'Nr',
  'Oct', 'Op', 'Ord', 'Pfc', 'Ph', 'Prof', 'Pvt', 'Rep', 'Reps', 'Res', 'Rev', 'Rs', 'Rt', 'Sen',
  'Sens', 'Sep', 'Sfc', 'Sgt', 'Sr', 'St', 'Supt', 'Surg', 'rev', 'v', 'vs',
];
// Moses' "#NUMERIC_ONLY#" prefixes: they keep their period only before a number.
export const NUMERIC_ONLY_PREFIXES = ['No', 'Art', 'pp'];

const SEP = String.raw`\s\p{Cc}\p{Z}\u200B\u2060\uFEFF`;
const NONSEP = `[^${SEP}]`;
const W = String.raw`[\p{L}\p{M}\p{N}]`;
const APOS = String.raw`['\u2019]`;
const CLITIC_SUFFIX = '(?:[sSſ]|[tT]|[dD]|[mM]|[rR][eE]|[vV][eE]|[lL][lL])';
const WORD = String.raw`${W}+(?:(?:\.?-|\.)(?=${W})${W}+|(?<=\p{N}),(?=\p{N})${W}+)*`;
const WORD_PREFIX = String.raw`(?:(?<=\p{L})${APOS}(?=\p{L})`
  + String.raw`|(?<=\p{N})${APOS}(?=s)`
  + String.raw`|(?<=\.)${APOS}(?=s(?!${W}))`
  + String.raw`|(?<!${NONSEP})${APOS}(?=${CLITIC_SUFFIX}(?!${W}))`
  + String.raw`|(?<!${W})-(?=\p{N}))`;
const END = `(?!-?${W})`;
const longest = Math.max(...NONBREAKING_PREFIXES.map((p) => p.length));
const byLength = [...NONBREAKING_PREFIXES].sort((a, b) => b.length - a.length);  // stable, as Python's sorted

const ALTERNATIVES = [
  String.raw`(?:(?:https?|ftp):\/\/|www\.)${NONSEP}+?(?=[.,;:!?'"\)\]\u2019]{0,8}(?:[${SEP}]|$))`,
  String.raw`[\p{L}\p{N}._%+\-]{1,64}@[\p{L}\p{N}\-]+(?:\.[\p{L}\p{N}\-]+)+`,
  String.raw`[\u{1F1E6}-\u{1F1FF}]{2}`,
  String.raw`\p{So}(?:[\uFE0F\u20E3\u{1F3FB}-\u{1F3FF}]|\u200D\p{So})*`,
  String.raw`\.{2,}|-{2,}`,
  String.raw`(?:${NUMERIC_ONLY_PREFIXES.join('|')})\.(?=[${SEP}]+\p{Nd})`,
  String.raw`(?=[\p{N}.]*[\p{L}\p{M}])${W}+(?:\.${W}+)+\.${END}`,
  String.raw`(?=\p{L}{1,${longest}}\.)(?:${byLength.join('|')}|[A-Z])\.${END}`,
  String.raw`${WORD_PREFIX}?${WORD}(?:\.(?=[${SEP}]+\p{Ll}))?`,
  String.raw`${NONSEP}\p{M}*`,
];

export const TOKEN_PATTERN = ALTERNATIVES.join('|');
const PATTERN = new RegExp(TOKEN_PATTERN, 'gu');

// Lone surrogates (not valid Unicode) become U+FFFD, as the Python runtime does before its
// Rust tokenizer sees the text.
const wellFormed = (text) => (typeof text.toWellFormed === 'function'
  ? text.toWellFormed() : text.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD'));

/** Split one raw text into tokens (`[]` for empty or blank text). */
export function tokenize(text) {
  if (typeof text !== 'string') throw new TypeError(`text is ${typeof text}; expected a string`);
  return Array.from(wellFormed(text).matchAll(PATTERN), (m) => m[0]);
}
