"use strict";
// word-count: an OCI function for Function Fleet (the TypeScript template).
//
// Protocol (docs/oci.md): the input is the JSON object in the INPUT environment variable; the
// result is one JSON object printed as the LAST line of stdout. Logs go to stderr. To fail, print
// {"error": {"message": ..., "retryable": false}} as the last line and exit non-zero.
// No dependencies: the input is checked by hand against input_schema in function.yaml.
// `npm run build` compiles this file to dist/main.js (committed, so Node 20 runs it as is).
Object.defineProperty(exports, "__esModule", { value: true });
exports.check = check;
exports.wordCount = wordCount;
const ALLOWED = new Set(["text", "top"]);
function check(value) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
        return ["input: must be of type object"];
    }
    const input = value;
    const errors = [];
    if (!("text" in input)) {
        errors.push("input.text: is required");
    }
    else if (typeof input.text !== "string") {
        errors.push("input.text: must be of type string");
    }
    else if ([...input.text].length > 100000) {
        errors.push("input.text: longer than 100000 characters");
    }
    if ("top" in input) {
        const top = input.top;
        if (typeof top !== "number" || !Number.isInteger(top)) {
            errors.push("input.top: must be of type integer");
        }
        else if (top < 1 || top > 100) {
            errors.push("input.top: must be between 1 and 100");
        }
    }
    for (const key of Object.keys(input)) {
        if (!ALLOWED.has(key)) {
            errors.push(`input.${key}: is not allowed`);
        }
    }
    return errors;
}
function wordCount(text, top) {
    const words = text.toLowerCase().match(/[\p{L}\p{N}_]+(?:'[\p{L}\p{N}_]+)*/gu) ?? [];
    const counts = new Map();
    for (const word of words) {
        counts.set(word, (counts.get(word) ?? 0) + 1);
    }
    const ranked = [...counts.entries()]
        .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
        .slice(0, top);
    const newlines = text.split("\n").length - 1;
    const lines = text === "" ? 0 : newlines + (text.endsWith("\n") ? 0 : 1);
    return {
        words: words.length,
        lines,
        characters: [...text].length,
        top: ranked.map(([word, count]) => ({ word, count })),
    };
}
function fail(message, code = 2) {
    console.log(JSON.stringify({ error: { message, retryable: false } }));
    process.exit(code);
}
function main() {
    let data;
    try {
        data = JSON.parse(process.env.INPUT || "{}");
    }
    catch (error) {
        fail(`INPUT is not JSON: ${error.message}`);
    }
    const errors = check(data);
    if (errors.length > 0) {
        fail(`invalid input: ${errors.join("; ")}`);
    }
    const input = data;
    console.error(`counting ${[...input.text].length} characters`);
    console.log(JSON.stringify(wordCount(input.text, input.top ?? 3)));
}
main();
