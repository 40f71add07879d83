// word-count: an OCI function for Function Fleet (the Go template).
//
// Protocol (docs/oci.md): the input is the JSON object in the INPUT environment variable; the
// result is one JSON object printed as the LAST line of stdout. Logs go to stderr. To fail, print
// {"error": {"message": ..., "retryable": false}} as the last line and exit non-zero.
// Standard library only: encoding/json plus explicit checks mirroring input_schema in function.yaml.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

type wordCountInput struct {
	Text *string `json:"text"`
	Top  *int    `json:"top"`
}

type ranked struct {
	Word  string `json:"word"`
	Count int    `json:"count"`
}

type wordCountOutput struct {
	Words      int      `json:"words"`
	Lines      int      `json:"lines"`
	Characters int      `json:"characters"`
	Top        []ranked `json:"top"`
}

// parse decodes and checks the input: violations are returned, not fatal.
func parse(raw string) (wordCountInput, []string) {
	var input wordCountInput
	decoder := json.NewDecoder(bytes.NewReader([]byte(raw)))
	decoder.DisallowUnknownFields() // additionalProperties: false
	decoder.UseNumber()
	if err := decoder.Decode(&input); err != nil {
		return input, []string{fmt.Sprintf("input: %v", err)}
	}
	var errors []string
	if input.Text == nil {
		errors = append(errors, "input.text: is required")
	} else if utf8.RuneCountInString(*input.Text) > 100000 {
		errors = append(errors, "input.text: longer than 100000 characters")
	}
	if input.Top != nil && (*input.Top < 1 || *input.Top > 100) {
		errors = append(errors, "input.top: must be between 1 and 100")
	}
	return input, errors
}

func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_'
}

// words splits like the other templates: runs of letters, digits and '_', joined by single
// apostrophes between such runs ("don't").
func words(text string) []string {
	runes := []rune(strings.ToLower(text))
	var out []string
	var current []rune
	for i := 0; i < len(runes); i++ {
		r := runes[i]
		switch {
		case isWordRune(r):
			current = append(current, r)
		case r == '\'' && len(current) > 0 && i+1 < len(runes) && isWordRune(runes[i+1]):
			current = append(current, r)
		default:
			if len(current) > 0 {
				out = append(out, string(current))
				current = nil
			}
		}
	}
	if len(current) > 0 {
		out = append(out, string(current))
	}
	return out
}

func wordCount(text string, top int) wordCountOutput {
	all := words(text)
	counts := map[string]int{}
	for _, w := range all {
		counts[w]++
	}
	list := make([]ranked, 0, len(counts))
	for w, c := range counts {
		list = append(list, ranked{w, c})
	}
	sort.Slice(list, func(i, j int) bool {
		if list[i].Count != list[j].Count {
			return list[i].Count > list[j].Count
		}
		return list[i].Word < list[j].Word
	})
	if len(list) > top {
		list = list[:top]
	}
	lines := 0
	if text != "" {
		lines = strings.Count(text, "\n")
		if !strings.HasSuffix(text, "\n") {
			lines++
		}
	}
	return wordCountOutput{Words: len(all), Lines: lines, Characters: utf8.RuneCountInString(text), Top: list}
}

func fail(message string) {
	line, _ := json.Marshal(map[string]any{"error": map[string]any{"message": message, "retryable": false}})
	fmt.Println(string(line))
	os.Exit(2)
}

func main() {
	raw := os.Getenv("INPUT")
	if raw == "" {
		raw = "{}"
	}
	input, errors := parse(raw)
	if len(errors) > 0 {
		fail("invalid input: " + strings.Join(errors, "; "))
	}
	top := 3
	if input.Top != nil {
		top = *input.Top
	}
	fmt.Fprintf(os.Stderr, "counting %d characters\n", utf8.RuneCountInString(*input.Text))
	line, err := json.Marshal(wordCount(*input.Text, top))
	if err != nil {
		fail(err.Error())
	}
	fmt.Println(string(line))
}
