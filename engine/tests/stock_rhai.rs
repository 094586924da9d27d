//! The circle engine against a stock `rhai::Engine::new()`: scripts covering
//! every standard package, and Rhai's own example scripts, print and return
//! exactly the same through both, except the listed refusals, which fail in
//! the circle engine with their reason.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::Circle;
use engine::{ErrorKind, SCRIPT_STACK_SIZE};

/// What a run printed and returned.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    output: String,
    printed: String,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rhai_scripts")
}

/// Runs `script` on a stock engine with `print` and `debug` captured (one
/// line each, as the circle engine captures them) and imports resolved from
/// the fixture folder. The output is the final value as the script's own
/// `to_string` renders it, `""` for unit.
fn stock(script: &str) -> Result<Run, String> {
    let script = script.to_string();
    std::thread::Builder::new()
        .stack_size(SCRIPT_STACK_SIZE)
        .spawn(move || {
            let printed = Arc::new(Mutex::new(String::new()));
            let mut engine = rhai::Engine::new();
            // Rhai's release-build depth limits (a debug build of Rhai
            // allows 8 nested calls), as high as the circle engine's.
            engine.set_max_call_levels(64).set_max_expr_depths(64, 32);
            engine.set_module_resolver(rhai::module_resolvers::FileModuleResolver::new_with_path(
                fixtures(),
            ));
            let sink = printed.clone();
            engine.on_print(move |text| {
                let mut p = sink.lock().expect("print sink");
                p.push_str(text);
                p.push('\n');
            });
            let sink = printed.clone();
            engine.on_debug(move |text, _source, _pos| {
                let mut p = sink.lock().expect("debug sink");
                p.push_str(text);
                p.push('\n');
            });
            let value = engine
                .eval::<rhai::Dynamic>(&script)
                .map_err(|e| e.to_string())?;
            let mut scope = rhai::Scope::new();
            scope.push("value", value);
            let output = engine
                .eval_with_scope::<String>(&mut scope, "value.to_string()")
                .map_err(|e| format!("to_string of the result: {e}"))?;
            let printed = printed.lock().expect("printed").clone();
            Ok(Run { output, printed })
        })
        .expect("spawn stock thread")
        .join()
        .expect("stock engine must not panic")
}

fn circle(c: &Circle, script: &str) -> Result<Run, engine::ScriptError> {
    c.run(script).map(|o| {
        assert!(!o.printed_truncated, "printed text cut: {script}");
        Run {
            output: o.output,
            printed: o.printed,
        }
    })
}

/// Scripts covering every standard package, each run through both engines.
const SCRIPTS: &[(&str, &str)] = &[
    // Arithmetic and logic.
    (
        "arithmetic",
        "[1 + 2, 7 - 10, 6 * 7, 7 / 2, -7 % 3, 2 ** 10, 1 << 4, 256 >> 2, 6 & 3, 6 | 3, 6 ^ 3, -5.abs(), (-5).sign(), 0.is_zero(), 4.is_even(), 3.is_odd()]",
    ),
    (
        "float arithmetic",
        "[1.5 + 2, 7.0 / 2, 2 * 0.25, 10.0 % 3, 2.0 ** 0.5, 2.0 ** 3, -1.5.abs(), (-2.5).sign(), 1.0 / 3]",
    ),
    (
        "integer overflow is caught",
        "let x = 9223372036854775807; let r; try { x + 1 } catch (e) { r = `caught ${type_of(e)}`; } r",
    ),
    (
        "division by zero is caught",
        "let r; try { 1 / 0 } catch { r = \"caught\"; } r",
    ),
    (
        "comparisons",
        "[1 < 2, 2 <= 2, 3 > 4, 4 >= 4, 1 == 1.0, 1 != 2, \"a\" < \"b\", 'a' < 'b', 1.5 > 1, max(3, 7), min(3, 7), max(1.5, 2), min(\"b\", \"a\"), max('x', 'y')]",
    ),
    (
        "logic",
        "[true && false, true || false, !true, true ^ false, true & true, false | true]",
    ),
    // Bit fields.
    (
        "bit fields",
        "let x = 0b1011; [x.get_bit(0), x.get_bit(2), x.get_bits(0, 3), x.get_bits(1..3), x.get_bits(1..=3), { let y = x; y.set_bit(2, true); y }, { let y = x; y.set_bits(0, 2, 0); y }, { let y = x; y.set_bits(4..6, 3); y }, { let y = 0; y.set_bits(0..=3, 15); y }]",
    ),
    (
        "bit iteration",
        "let v = []; for b in 0b1101.bits() { v.push(b); } for b in 0b1101.bits(1) { v.push(b); } for b in 0b1101.bits(0, 2) { v.push(b); } for b in 0b1101.bits(1..3) { v.push(b); } v",
    ),
    // Math.
    (
        "math",
        "[sqrt(16.0), 2.0.sqrt(), PI(), E(), sin(0.0), cos(0.0), tan(0.0), asin(0.0), acos(1.0), atan(0.0), atan(1.0, 1.0), sinh(0.0), cosh(0.0), tanh(0.0), asinh(0.0), acosh(1.0), atanh(0.0), hypot(3.0, 4.0), exp(0.0), ln(1.0), log(100.0), log(8.0, 2.0), 180.0.to_radians(), PI().to_degrees()]",
    ),
    (
        "rounding and conversion",
        "[2.5.floor(), 2.5.ceiling(), 2.5.round(), 2.5.int(), 2.5.fraction(), 3.9.to_int(), 3.to_float(), 1.0.is_nan(), 1.0.is_finite(), (1.0 / 0.0).is_infinite()]",
    ),
    (
        "parsing numbers",
        "[parse_int(\"42\"), parse_int(\"ff\", 16), parse_float(\"2.5\"), \"17\".parse_int(), 255.to_hex(), 8.to_octal(), 5.to_binary()]",
    ),
    (
        "a failed parse is caught",
        "let r; try { parse_int(\"x\") } catch (e) { r = \"not a number\"; } r",
    ),
    // Strings.
    (
        "strings",
        "let s = \"Hello, World\"; [s.len(), s.to_upper(), s.to_lower(), s.contains(\"World\"), s.contains('W'), s.starts_with(\"Hell\"), s.ends_with(\"ld\"), s.index_of(\"o\"), s.index_of('o', 5), s.index_of(\"o\", 5), s.sub_string(7), s.sub_string(0, 5), s.sub_string(0..5), s.sub_string(0..=4), s.split(\", \"), s.split(','), s.split(2), s.split_rev(\"o\"), s.split(\"l\", 2), s.get(0), s.get(-1), s.to_chars(), s.bytes(), \" x \".trim(), s.is_empty()]",
    ),
    (
        "string editing",
        "let s = \"abcdef\"; s.crop(2); let t = \"abcdef\"; t.crop(1, 3); let u = \"abcdef\"; u.crop(1..3); let v = \"hello\"; v.replace(\"l\", \"L\"); let w = \"hello\"; w.replace('l', 'x'); let x = \"abc\"; x.pad(6, '*'); let y = \"abc\"; y.pad(7, \"xy\"); let z = \"hello\"; z.remove('l'); let q = \"hello\"; q.truncate(2); let r = \"abc\"; let p = r.pop(); let m = \"hello\"; m.make_upper(); let n = \"ABC\"; n.make_lower(); let o = \"  ws  \"; o.trim(); let k = \"abc\"; k.set(1, 'X'); [s, t, u, v, w, x, y, z, q, r, p, m, n, o, k]",
    ),
    (
        "string operators and interpolation",
        "let s = \"a\" + \"b\" + 'c' + 1 + 2.5 + true + (); s += \"!\"; s += 'x'; let n = 3; [s, `n = ${n}, n*2 = ${n * 2}, arr = ${[1, 2]}`, \"x\" == \"x\", \"x\" != \"y\", 'a' + 'b', 'a' + \"b\"]",
    ),
    (
        "chars",
        "let c = 'a'; [c.to_upper(), 'Q'.to_lower(), c.to_int(), 'x'.to_string()]",
    ),
    (
        "string iteration and splitting",
        "let v = []; for c in \"héllo\" { v.push(c); } for c in \"hello\".chars(1) { v.push(c); } for c in \"hello\".chars(1, 2) { v.push(c); } for c in \"hello\".chars(1..3) { v.push(c); } [v, \"a,b,c\".split(',', 2), \"a,b,c\".split_rev(',', 2), \"héllo\".len(), \"héllo\".bytes()]",
    ),
    (
        "string min, max and comparison",
        "[max(\"a\", \"b\"), min('a', 'b'), \"abc\" < \"abd\", \"b\" >= \"a\", \"abc\".index_of('z'), \"a\\nb\".split('\\n')]",
    ),
    // Arrays.
    (
        "arrays",
        "let a = [3, 1, 2]; a.push(5); a.insert(0, 9); a.append([7, 8]); let p = a.pop(); let s = a.shift(); let r = a.remove(1); a += [4]; [a, p, s, r, a.len(), a.is_empty(), a.contains(2), a.index_of(2), a.get(0), a.get(-1), a.get(100), a[1], a[-1], a + [0]]",
    ),
    (
        "array ordering",
        "let a = [3, 1, 2, 3]; a.sort(); let b = [3, 1, 2]; b.sort(|x, y| y - x); let c = [3, 1, 2]; c.sort_desc(); let d = [1, 1, 2, 2, 1]; d.dedup(); let e = [1, 2, 3]; e.reverse(); let f = [\"b\", \"a\"]; f.sort(); [a, b, c, d, e, f]",
    ),
    (
        "array higher-order functions",
        "let a = [1, 2, 3, 4, 5]; [a.map(|x| x * 2), a.filter(|x| x % 2 == 1), a.reduce(|sum, x| sum + x, 0), a.reduce_rev(|s, x| s + x, 0), a.some(|x| x > 4), a.all(|x| x > 0), a.find(|x| x > 2), a.find_map(|x| if x > 3 { x * 10 }), a.index_of(|x| x == 3), a.map(|x, i| x * i), a.zip([10, 20], |x, y| x + y), a.filter(\"is_odd\")]",
    ),
    (
        "array slicing",
        "let a = [1, 2, 3, 4, 5, 6]; let b = a.extract(1, 2); let c = a.extract(3..); let d = a.extract(1..=2); let e = a.extract(4); let f = a.split(2); let g = [1, 2, 3, 4, 5]; let h = g.drain(|x| x > 3); let i = [1, 2, 3, 4]; let j = i.retain(|x| x < 3); let k = [1, 2, 3, 4, 5]; k.splice(1, 2, [9, 9, 9]); let l = [1, 2, 3, 4]; l.truncate(2); let m = [1, 2, 3, 4]; m.chop(2); let n = [1, 2, 3]; n.clear(); let o = [1]; o.pad(3, 0); let q = [1, 2, 3, 4]; let r = q.drain(1..3); [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, q, r]",
    ),
    (
        "array equality and nesting",
        "[[1, [2, 3]] == [1, [2, 3]], [1, 2] != [1, 3], [1] == [1.0], [[]] == [[]], [#{a: 1}] == [#{a: 1}], [1, \"a\", 'c', 2.5, true, (), [1], #{x: 1}]]",
    ),
    (
        "arrays of every printable kind",
        "print([1, \"a\", 'c', 2.5, true, (), [1, 'd'], #{x: 'e'}, Fn(\"abs\"), blob(2, 1), 1..3, 1..=3]); debug(['c', \"s\"]); ['c', \"s\", Fn(\"abs\")]",
    ),
    (
        "for-each and iterators",
        "let a = []; [1, 2, 3].for_each(|| a.push(this * 2)); let s = 0; for x in range(0, 10, 3) { s += x; } for x in range(10, 0, -4) { s += x; } for x in 0..3 { s += x; } for x in 0..=3 { s += x; } for (x, i) in [\"a\", \"b\"] { a.push(`${x}${i}`); } let r = 1..5; [a, s, r, r.start, r.end, r.contains(3), r.is_exclusive, (1..=5).is_inclusive, (1..=5).end, (2..2).is_empty]",
    ),
    // Object maps.
    (
        "object maps",
        "let m = #{ a: 1, b: \"two\", c: [3] }; m.d = 4.0; m[\"e f\"] = 'g'; let r = m.remove(\"a\"); [m.len(), m.keys(), m.values(), m.contains(\"b\"), m.get(\"b\"), m.get(\"zz\"), m.b, m[\"c\"], r, m.is_empty(), \"b\" in m, m]",
    ),
    (
        "object map functions",
        "let m = #{ a: 1, b: 2, c: 3 }; let n = m + #{ d: 4 }; n += #{ e: 5 }; let o = #{ a: 1 }; o.mixin(#{ z: 26 }); let p = #{ a: 1 }; p.fill_with(#{ a: 9, b: 2 }); let f = m.filter(|k, v| v > 1); let g = m.map(|k, v| `${k}=${v}`); let q = #{ a: 1, b: 2 }; let d = q.drain(|k, v| v > 1); let s = #{ a: 1, b: 2 }; s.retain(|k, v| v > 1); [n, o, p, f, g, q, d, s, m == #{ a: 1, b: 2, c: 3 }, m != #{}, m.to_json(), #{ x: [1, #{ y: \"z\" }] }.to_json()]",
    ),
    (
        "maps print and parse as JSON",
        "let m = parse_json(`{\"a\": [1, 2.5, null, true], \"b\": {\"c\": \"d\"}}`); print(m); debug(m); m.a",
    ),
    (
        "JSON integers past the script integer range parse as floats",
        "[`9223372036854775808`, `18446744073709551615`, `18446744073709551616`, `-9223372036854775809`].map(|n| { let v = parse_json(`{\"a\": ${n}}`).a; [type_of(v), v] })",
    ),
    (
        "property access on maps and this",
        "let obj = #{ n: 1, add: |x| this.n += x }; obj.add(5); obj.add(2); obj.n",
    ),
    // Blobs.
    (
        "blobs",
        "let b = blob(4, 0x41); b.push(0x42); b.insert(0, 0x30); b.append(blob(2, 1)); b += 7; let p = b.pop(); let s = b.shift(); [b, b.len(), b.is_empty(), b.contains(0x42), b[0], b[-1], b.get(100), p, s, type_of(b)]",
    ),
    (
        "blob conversion",
        "let b = \"héllo\".to_blob(); let c = blob(); c.append(\"ab\"); c.append('z'); c += \"!\"; [b, b.len(), b.as_string(), c.as_string(), c.to_array(), blob(3, 0xff).to_array(), blob(3)]",
    ),
    (
        "blob slicing and editing",
        "let b = blob(); for i in 0..10 { b.push(i); } let e = b.extract(2, 3); let f = b.extract(5..7); let g = b.extract(7); let h = b.split(8); let c = b; c.truncate(4); let d = b; d.chop(2); let r = b; r.reverse(); let s = b; s.splice(1, 2, blob(3, 9)); let t = b; let u = t.drain(1, 2); let v = b; v.retain(0..3); let w = b; w.pad(12, 0xee); let x = b; x.clear(); [b, e, f, g, h, c, d, r, s, t, u, v, w, x, b == blob(8), b != blob(8)]",
    ),
    (
        "blob numbers and text",
        "let b = blob(16); b.write_le(0, 8, 0x1234); b.write_be(8, 4, 0x1234); let x = b.parse_le_int(0, 8); let y = b.parse_be_int(8, 4); let f = blob(8); f.write_le(0, 8, 1.5); let g = blob(8); g.write_be(0..8, 2.5); let t = blob(6); t.write_utf8(0, 6, \"héllo\"); let a = blob(6); a.write_ascii(0..6, \"hi\"); [b, x, y, f.parse_le_float(0, 8), g.parse_be_float(0..8), t, t.as_string(), a, b.parse_le_int(0..4), b.parse_be_int(8..=11)]",
    ),
    (
        "blobs print and iterate",
        "let b = blob(3, 0x61); print(b); debug(b); let v = []; for x in b { v.push(x); } print(`${b}`); [v, type_of(v[0]), b.to_string(), b.to_debug()]",
    ),
    // Function pointers and closures.
    (
        "function pointers",
        "fn add(x, y) { x + y } let f = Fn(\"add\"); let g = Fn(\"abs\"); [f.call(1, 2), call(f, 3, 4), g.call(-3), f.name, f.is_anonymous, type_of(f), f, is_def_fn(\"add\", 2), is_def_fn(\"add\", 1), is_def_fn(\"nope\", 0)]",
    ),
    (
        "closures",
        "let x = 10; let add = |y| x + y; let counter = 0; let inc = || { counter += 1; counter }; inc.call(); inc.call(); let fs = []; for i in 0..3 { fs.push(|| i * 10); } [add.call(5), counter, fs.map(|f| f.call()), add.is_anonymous, type_of(add)]",
    ),
    (
        "methods on this and function calls",
        "fn double() { this *= 2; } fn fact(n) { if n <= 1 { 1 } else { n * fact(n - 1) } } let v = 21; v.double(); [v, fact(10)]",
    ),
    // Core language.
    (
        "type_of",
        "[type_of(1), type_of(1.0), type_of(\"s\"), type_of('c'), type_of(true), type_of(()), type_of([]), type_of(#{}), type_of(blob()), type_of(timestamp()), type_of(Fn(\"abs\")), type_of(|| 1), type_of(1..2), type_of(1..=2)]",
    ),
    (
        "print and debug of every kind",
        "print(1); print(1.0); print(\"s\"); print('c'); print(true); print(()); print([1]); print(#{a: 1}); print(blob(1)); print(timestamp()); print(Fn(\"abs\")); print(1..3); debug(1); debug(1.0); debug(\"s\"); debug('c'); debug(true); debug(()); debug([1, \"a\"]); debug(#{a: \"b\"}); debug(blob(1)); debug(timestamp()); debug(Fn(\"abs\")); debug(1..3); print(); debug()",
    ),
    (
        "to_string and to_debug",
        "[1.to_string(), 1.5.to_debug(), \"s\".to_debug(), 'c'.to_debug(), ().to_debug(), [1, 'c'].to_string(), #{a: 'c'}.to_debug(), Fn(\"abs\").to_debug(), timestamp().to_string(), blob(2, 3).to_debug()]",
    ),
    (
        "control flow",
        "let s = 0; let i = 0; while i < 10 { i += 1; if i % 2 == 0 { continue; } s += i; } do { s += 100; } while s < 200; do { s -= 1; } until s < 250; loop { s += 1; if s > 300 { break; } } let v = switch s { 0 => \"zero\", 301 | 302 => \"three hundred and one\", _ => \"other\" }; let w = if s > 0 { \"pos\" } else { \"neg\" }; [s, v, w, switch 5 { 1..3 => 1, 3..=6 => 2, _ => 3 }]",
    ),
    (
        "throw and catch",
        "let a; try { throw \"boom\"; } catch (e) { a = `caught ${e}`; } let b; try { throw #{ code: 42 }; } catch (e) { b = e.code; } let c; try { [1][5] } catch { c = \"index\"; } [a, b, c]",
    ),
    (
        "constants, shadowing and scope",
        "const X = 5; let y = X * 2; { let y = 100; } let y = y + 1; let z; [X, y, z, is_shared(y)]",
    ),
    (
        "tags, take and global",
        "let x = 42; x.tag = 7; let t = x.tag; let s = \"moved\"; let u = take(s); const G = 3; fn g() { global::G * 2 } [t, u, s, g()]",
    ),
    (
        "exit ends the script with a value",
        "print(\"before\"); exit(42); print(\"after\"); 0",
    ),
    ("exit without a value", "print(\"only\"); exit(); 1"),
    (
        "switch on strings and nested functions",
        "fn kind(x) { switch type_of(x) { \"i64\" => \"int\", \"string\" => \"text\", _ => \"other\" } } [kind(1), kind(\"a\"), kind(1.5)]",
    ),
    (
        "export at the top level",
        "let x = 40; export x as answer; export const Y = 2; x + Y",
    ),
    (
        "export as the last statement",
        "let x = 10; print(x); export x as foo;",
    ),
    // Time.
    (
        "timestamps",
        "let t = timestamp(); [type_of(t), t.elapsed < 10.0, t.elapsed >= 0.0, elapsed(t) < 10.0, (t + 5) - t, (t + 1.5) - t, t - (t - 2), t == t, t != t + 1, t < t + 1, t + 1 > t, t <= t, t >= t - 1]",
    ),
    (
        "timestamp assignment arithmetic",
        "let t = timestamp(); let u = t; u += 3; let v = t; v -= 2.5; [u - t, v - t, u > v, `${t}`, t.to_string()]",
    ),
    (
        "timestamps print",
        "let t = timestamp(); print(t); debug(t); print(`${t}`); t",
    ),
    ("a timestamp as the final value", "timestamp()"),
    (
        "a blob as the final value",
        "let b = blob(3, 0x2a); b.push(1); b",
    ),
    (
        "a map of values that cannot be stored as the final value",
        "#{ when: timestamp(), bytes: blob(2), f: Fn(\"abs\"), c: 'x', r: 1..3 }",
    ),
    (
        "unit, strings and numbers as final values",
        "[\"\", \"text\", 42, -1, 2.0, 1e10, 1.5e-7, 0.1 + 0.2]",
    ),
    ("a char as the final value", "'z'"),
    ("a function pointer as the final value", "Fn(\"abs\")"),
    ("a range as the final value", "1..=5"),
    ("a stepped range as the final value", "range(0, 10, 3)"),
    ("a character stream as the final value", "\"abc\".chars()"),
    ("an empty array as the final value", "[]"),
    ("an empty map as the final value", "#{}"),
    ("unit as the final value", "()"),
];

/// Scripts the circle engine refuses, with the error kind and a part of the
/// message that states the reason. Each runs in the stock engine.
const REFUSALS: &[(&str, &str, ErrorKind, &str)] = &[
    (
        "eval",
        "let x = 1; eval(\"x + 1\")",
        ErrorKind::Syntax,
        "'eval' is not available in scripts: it compiles text made while the script runs",
    ),
    (
        "import",
        "import \"loop\" as m; m::foo",
        ErrorKind::Syntax,
        "'import' is not available in scripts: modules are read from the file system",
    ),
    (
        "curry",
        "let f = Fn(\"abs\"); let g = f.curry(-3); g.call()",
        ErrorKind::Syntax,
        "'curry' is not available in scripts: it copies a function pointer's arguments",
    ),
    (
        "curry as a function",
        "let f = curry(Fn(\"abs\"), -3); f.call()",
        ErrorKind::Syntax,
        "'curry' is not available in scripts: it copies a function pointer's arguments",
    ),
    (
        "sleep",
        "sleep(0); 1",
        ErrorKind::Runtime,
        "sleep is not available: a script may not block its worker",
    ),
    (
        "sleep for a float time",
        "sleep(0.0); 1",
        ErrorKind::Runtime,
        "sleep is not available: a script may not block its worker",
    ),
];

/// Rhai's example scripts that need a refused feature: file name, kind and
/// reason as in [`REFUSALS`].
const REFUSED_EXAMPLES: &[(&str, ErrorKind, &str)] = &[(
    "module.rhai",
    ErrorKind::Syntax,
    "'import' is not available in scripts: modules are read from the file system",
)];

/// Rhai's example scripts that are benchmarks, run with a smaller workload
/// (the same code, a size lowered) so that a debug build ends in seconds,
/// not minutes, within the default limits (an array or map grown one item at
/// a time has its whole size checked after each step under a size limit,
/// which a stock engine has not): file name, text replaced, replacement.
const SMALLER_WORKLOADS: &[(&str, &str, &str)] = &[
    ("fibonacci.rhai", "const TARGET = 28;", "const TARGET = 18;"),
    (
        "fibonacci.rhai",
        "const ANSWER = 317_811;",
        "const ANSWER = 2_584;",
    ),
    ("for2.rhai", "const MAX = 1_000_000;", "const MAX = 5_000;"),
    (
        "primes.rhai",
        "const MAX_NUMBER_TO_CHECK = 1_000_000;",
        "const MAX_NUMBER_TO_CHECK = 50_000;",
    ),
    (
        "primes.rhai",
        "const ANSWER = 78_498;",
        "const ANSWER = 5_133;",
    ),
    ("speed_test.rhai", "let x = 1_000_000;", "let x = 100_000;"),
    (
        "strings_map.rhai",
        "let adverbs = [ \"moderately\", \"really\", \"slightly\", \"very\" ];",
        "let adverbs = [ \"very\" ];",
    ),
    (
        "strings_map.rhai",
        "for animal in animals {",
        "for animal in animals.extract(0, 10) {",
    ),
];

/// The seconds a script measured with `elapsed` differ from run to run: each
/// `<number> seconds` becomes `<n> seconds`.
fn without_timings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut words: Vec<&str> = line.split(' ').collect();
        for i in 1..words.len() {
            if words[i].starts_with("seconds") && words[i - 1].parse::<f64>().is_ok() {
                words[i - 1] = "<n>";
            }
        }
        out.push_str(&words.join(" "));
    }
    out
}

/// Runs each `(name, script)` through both engines and lists every script
/// that fails in either or differs.
fn differences<'a>(c: &Circle, scripts: impl Iterator<Item = (&'a str, String)>) -> Vec<String> {
    let mut diffs = Vec::new();
    for (name, script) in scripts {
        let ours = circle(c, &script).map_err(|e| format!("{e:?}"));
        let theirs = stock(&script);
        let normalise = |r: Result<Run, String>| {
            r.map(|r| Run {
                output: r.output,
                printed: without_timings(&r.printed),
            })
        };
        let (ours, theirs) = (normalise(ours), normalise(theirs));
        match (&ours, &theirs) {
            (Ok(a), Ok(b)) if a == b => {}
            _ => diffs.push(format!(
                "{name}:\n  circle: {ours:?}\n  stock:  {theirs:?}\n  script: {script}"
            )),
        }
    }
    diffs
}

#[test]
fn every_standard_package_behaves_as_in_stock_rhai() {
    let c = Circle::new();
    let diffs = differences(
        &c,
        SCRIPTS
            .iter()
            .map(|(name, script)| (*name, script.to_string())),
    );
    assert!(
        diffs.is_empty(),
        "{} of {} scripts differ:\n{}",
        diffs.len(),
        SCRIPTS.len(),
        diffs.join("\n")
    );
}

#[test]
fn refused_scripts_fail_with_their_reason_and_run_in_stock_rhai() {
    let c = Circle::new();
    for (name, script, kind, reason) in REFUSALS {
        let e = c.fails(script, *kind);
        assert!(e.message.contains(reason), "{name}: {e:?}");
        assert!(stock(script).is_ok(), "{name} fails in stock Rhai too");
    }
    c.still_works();
}

fn example_scripts() -> Vec<(String, String)> {
    let mut scripts: Vec<(String, String)> = std::fs::read_dir(fixtures())
        .expect("fixture folder")
        .map(|entry| entry.expect("fixture entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rhai"))
        .map(|path| {
            let name = path
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned();
            let mut script = std::fs::read_to_string(&path).expect("read fixture");
            for (file, from, to) in SMALLER_WORKLOADS {
                if *file == name {
                    assert!(script.contains(from), "{name} has no {from}");
                    script = script.replace(from, to);
                }
            }
            (name, script)
        })
        .collect();
    scripts.sort();
    scripts
}

#[test]
fn rhai_example_scripts_run_as_in_stock_rhai() {
    let c = Circle::new();
    let scripts = example_scripts();
    assert_eq!(scripts.len(), 28, "the example scripts copied from Rhai");
    let refused = |name: &str| REFUSED_EXAMPLES.iter().find(|(n, ..)| *n == name);
    let compared = scripts
        .iter()
        .filter(|(name, _)| refused(name).is_none())
        .map(|(name, script)| (name.as_str(), script.clone()));
    let diffs = differences(&c, compared);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    for (name, script) in &scripts {
        if let Some((_, kind, reason)) = refused(name) {
            let e = c.fails(script, *kind);
            assert!(e.message.contains(reason), "{name}: {e:?}");
            assert!(stock(script).is_ok(), "{name} fails in stock Rhai too");
        }
    }
}
