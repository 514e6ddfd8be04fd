/**
 * MLflow's search syntax for runs and experiments (src/tracking/search.ts), as pure functions:
 * the module's worked example, each operator, quoting, ordering with missing values, and errors
 * that name the clause.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { comparator, matches, parseOrderBy, parseSearchFilter, type Entity } from '../src/tracking/index.js';
import { FerryError } from '../src/errors.js';

const ATTRS = ['run_name', 'status', 'start_time'];
const NUMERIC = ['start_time'];

interface FakeRun { metrics: Record<string, number>; params: Record<string, string>; tags: Record<string, string>; attrs: Record<string, string | number> }
const lookup = (r: FakeRun) => (entity: Entity, key: string): string | number | undefined => {
  const source = entity === 'metric' ? r.metrics : entity === 'param' ? r.params : entity === 'tag' ? r.tags : entity === 'attribute' ? r.attrs : {};
  return Object.hasOwn(source, key) ? source[key] : undefined;
};
const run = (metrics: Record<string, number>, params: Record<string, string> = {}, tags: Record<string, string> = {}, attrs: Record<string, string | number> = {}): FakeRun => ({ metrics, params, tags, attrs });
const keep = (filter: string, r: FakeRun): boolean => matches(parseSearchFilter(filter, ATTRS, NUMERIC), lookup(r));

test('the worked example: rmse < 1 and params.model LIKE \'lin%\'', () => {
  const filter = "metrics.rmse < 1 and params.model LIKE 'lin%'";
  assert.equal(keep(filter, run({ rmse: 0.8 }, { model: 'linear' })), true);
  assert.equal(keep(filter, run({ rmse: 1.0 }, { model: 'linear' })), false);
  assert.equal(keep(filter, run({ rmse: 0.8 })), false, 'a missing param never matches');
});

test('operators, entities, quoting and IN lists', () => {
  const r = run({ acc: 0.9 }, { alpha: '0.5' }, { 'my tag': 'A b', team: 'ml' }, { status: 'FINISHED', run_name: 'Brisk-Otter', start_time: 1000 });
  for (const [filter, want] of [
    ['metrics.acc >= 0.9', true], ['metrics.acc > 0.9', false], ['metrics.acc != 0.9', false], ['metric.acc <= 1e0', true],
    ["params.alpha = '0.5'", true], ["params.alpha != '0.5'", false],
    ["tags.`my tag` = 'A b'", true], ['tags."my tag" ILIKE \'a%\'', true], ["tags.`my tag` LIKE 'a%'", false],
    ["attributes.status IN ('FINISHED', 'FAILED')", true], ["status NOT IN ('FINISHED')", false],
    ["run_name ILIKE '%otter'", true], ['start_time > 999', true], ["tags.team = 'ml' AND attributes.start_time < 1000", false],
    ["tags.team = 'it''s'", false],
  ] as const) assert.equal(keep(filter, r), want, filter);
});

test('errors name the clause and what is wrong', () => {
  for (const [filter, why] of [
    ['metrics.acc ~ 3', /no comparison operator/], ["metrics.acc = 'x'", /compares with a number/], ['params.a > 3', /is not a quoted string|compares numbers/],
    ["colour = 'red'", /unknown attribute 'colour'/], ["widgets.a = 'b'", /unknown entity 'widgets'/], ['metrics.acc IN (1)', /parenthesised list of strings/],
  ] as const) {
    assert.throws(() => parseSearchFilter(filter, ATTRS, NUMERIC), (err: unknown) => err instanceof FerryError && err.code === 'INVALID_PARAMETER_VALUE' && why.test(err.message) && err.message.includes(filter), filter);
  }
});

test('order_by: directions, several keys, runs without the key last either way', () => {
  const runs = [run({ acc: 0.5 }, {}, {}, { run_name: 'a' }), run({}, {}, {}, { run_name: 'b' }), run({ acc: 0.9 }, {}, {}, { run_name: 'c' }), run({ acc: 0.9 }, {}, {}, { run_name: 'd' })];
  const order = (o: string[]): string[] => [...runs].sort(comparator(parseOrderBy(o, ATTRS), lookup, () => 0)).map((r) => String(r.attrs.run_name));
  assert.deepEqual(order(['metrics.acc DESC', 'run_name DESC']), ['d', 'c', 'a', 'b']);
  assert.deepEqual(order(['metrics.acc']), ['a', 'c', 'd', 'b']);
  assert.throws(() => parseOrderBy(['metrics.acc SIDEWAYS'], ATTRS), /order_by\[0\]/);
  assert.throws(() => parseOrderBy(['colour'], ATTRS), /order_by\[0\]/);
});
