#pragma once
// Phone numbers for people who may not see them (docs/console.md): which
// values are phone numbers, and how they are shown masked. Value-based: a
// building id, a ticket id, a date, a service number (110, 12345, 95588,
// 96110) or an alert id is never touched; a number is, wherever it is.
//
// Recognised (digits may be grouped by single spaces or hyphens):
//   mobile        13812348000              -> 138****8000
//                 +86 / 0086 / 86 prefix   -> +86138****8000, 0086 138 **** 8000
//   landline      0 + area code (010, 02x: 3 digits; 0xxx: 4) + 7-8 digits
//                 010-12345678             -> 010-****5678
//                 +86 without the trunk 0  -> +86 755 ****5678
//   international '+' or '00' and 8-15 digits (other than 86)
//                 +442012345678            -> +442*****5678
// A number must stand alone: not glued to letters, digits, '_' or '*'
// (so hex ids and already masked numbers are left as they are), nor part of
// a decimal. Not recognised: local numbers without an area code (7-8 bare
// digits are as likely to be a date or an id).
//
// Pure functions, no state; they allocate only for their result. Not for the
// per-event hot path: the console, the alerts API and logs use them.
//
// The rule engine's title masking (append_masked_text in json_writer.h:
// every run of 7+ digits, for everybody) is separate and stricter.
#include <string>
#include <string_view>

namespace tocsin {

// True when the whole of `value` is one phone number (surrounding spaces allowed).
bool is_phone_number(std::string_view value);

// `number` masked for display: prefix kept, then the first 3 digits of a
// mobile (the area code of a landline), the last 4, '*' for each digit in
// between; separators kept. A value that is not recognised but has 8 or more
// digits keeps its first 3 and last 4 digits; fewer digits give "****". For
// fields known to hold a number (an SMS address): use mask_phones for text.
std::string mask_phone_number(std::string_view number);

// `text` with every phone number in it masked as by mask_phone_number;
// everything else unchanged.
std::string mask_phones(std::string_view text);
void append_phones_masked(std::string& out, std::string_view text);

// Copies the JSON value `json` to `out` with every string value (and every
// number that reads as a phone number, which becomes a string) passed
// through mask_phones; object keys are kept. Returns false, leaving `out`
// as it was, when `json` is not valid JSON.
bool append_json_phones_masked(std::string& out, std::string_view json);

}  // namespace tocsin
