// The Brown corpus reader of the demo: detokenisation of known tagged sentences, the genre split, and the fixed
// held-out files (the demo's before/after numbers depend on them staying the same).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  FICTION_GENRES,
  NON_FICTION_GENRES,
  byteCount,
  detokenize,
  detokenizeParagraph,
  readBrown,
  sideOf,
  splitBrown,
} from '../../src/demo/brown.ts';

const all = readBrown();

test('detokenising strips tags and puts quotes inside the punctuation that follows them', () => {
  assert.equal(
    detokenizeParagraph(
      'The/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at investigation/nn of/in ' +
        "Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` no/at evidence/nn ''/'' that/cs any/dti " +
        'irregularities/nns took/vbd place/nn ./.',
    ),
    'The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no ' +
      'evidence" that any irregularities took place.',
  );
  assert.equal(
    detokenizeParagraph(
      "``/`` Only/rb a/at relative/jj handful/nn was/bedz received/vbn ''/'' ,/, the/at jury/nn said/vbd ,/, ``/`` " +
        "considering/in the/at size/nn of/in this/dt city/nn ''/'' ./.",
    ),
    '"Only a relative handful was received," the jury said, "considering the size of this city."',
  );
});

test(
  'detokenising undoubles semicolons and abbreviation periods, joins dashes, brackets, single quotes and slashed ' +
    'words',
  () => {
    assert.equal(
      detokenizeParagraph(
        "Filippo/np Rossi/np ,/, that's/dt+bez what/wdt he/pps was/bedz called/vbn ;/. ;/.\nbut/cc here/rb he/pps " +
          'was/bedz just/rb Signore/np ./.',
      ),
      "Filippo Rossi, that's what he was called; but here he was just Signore.",
    );
    assert.equal(detokenizeParagraph('won/vbn by/in Ivan/np Allen/np Jr./np ./.'), 'won by Ivan Allen Jr.');
    assert.equal(
      detokenizeParagraph('tomato/nn paste/nn --/-- the/at ripe/jj smell/nn'),
      'tomato paste--the ripe smell',
    );
    assert.equal(
      detokenizeParagraph("more/ap '/' pro/jj '/' letters/nns than/in '/' con/jj '/' ./."),
      "more 'pro' letters than 'con'.",
    );
    assert.equal(
      detokenizeParagraph('about/rb 1/2/cd of/in them/ppo (/( see/vb below/rb )/) ?/.'),
      'about 1/2 of them (see below)?',
    );
  },
);

test('a file keeps its paragraphs, one blank line apart, and loses its indentation', () => {
  const tagged = '\n\n\tFirst/od line/nn ./.\nSecond/od one/pn ./.\n\n\n\tNew/jj paragraph/nn !/.\n';
  assert.equal(detokenize(tagged), 'First line. Second one.\n\nNew paragraph!');
});

test('every corpus file is read, none keeps a POS tag, and genres fall into the two sides', () => {
  assert.equal(all.length, 500);
  assert.equal(all.filter((f) => f.side === 'nonfiction').length, 374);
  assert.equal(all.filter((f) => f.side === 'fiction').length, 126);
  const genres = new Set(all.map((f) => f.genre));
  assert.deepEqual([...genres].sort(), [...NON_FICTION_GENRES, ...FICTION_GENRES].sort());
  for (const f of all) {
    assert.ok(f.text.length > 5000, `${f.id} is short`);
    assert.doesNotMatch(f.text, /\/(at|nn|nns|in|jj|vbd|np|cc)(-tl|-hl)?[ \n]/, `${f.id} still has tags`);
    assert.doesNotMatch(f.text, /``|;;| [,.;?!)]|\( /, `${f.id} has corpus punctuation left`); // '' stays only as inches: 4' 10''
  }
  assert.equal(sideOf('romance'), 'fiction');
  assert.throws(() => sideOf('poetry'), { code: 'LK_FILE_INVALID' });
});

test('the held-out split takes whole files, about 1 in 10 of each genre, always the same ones', () => {
  const nf = splitBrown(all, 'nonfiction'),
    fi = splitBrown(all, 'fiction');
  assert.deepEqual([nf.train.length, nf.heldOut.length, fi.train.length, fi.heldOut.length], [335, 39, 113, 13]);
  assert.deepEqual(
    fi.heldOut.map((f) => f.id),
    ['ck05', 'ck15', 'ck25', 'cl07', 'cl19', 'cm04', 'cn05', 'cn15', 'cn25', 'cp05', 'cp15', 'cp25', 'cr05'],
  );
  for (const s of [nf, fi]) {
    const ids = [...s.train, ...s.heldOut].map((f) => f.id);
    assert.equal(new Set(ids).size, ids.length, 'train and held-out overlap');
    for (const g of new Set(s.train.map((f) => f.genre)))
      assert.ok(
        s.heldOut.some((f) => f.genre === g),
        `no held-out ${g} file`,
      );
  }
  assert.ok(byteCount(nf.train) > 4_000_000 && byteCount(fi.train) > 1_200_000);
  assert.deepEqual(
    splitBrown(readBrown({ side: 'fiction' }), 'fiction').heldOut.map((f) => f.id),
    fi.heldOut.map((f) => f.id),
  );
  assert.throws(() => splitBrown(all, 'fiction', 1), { code: 'LK_INVALID_ARGUMENT' });
});
